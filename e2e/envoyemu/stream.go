package envoyemu

import (
	"context"
	"errors"
	"io"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// event is what waiting on the ext_proc stream can end with.
type event int

const (
	evAnswer     event = iota // a ProcessingResponse arrived
	evClosed                  // the server closed the stream cleanly: Envoy goes on without it
	evGRPCError               // the stream failed: 500 (fail closed)
	evTimeout                 // message_timeout passed: 504 (fail closed)
	evClientGone              // the downstream client went away
)

// received is one message (or the end) read from the stream by the receiver goroutine.
type received struct {
	resp *extprocv3.ProcessingResponse
	err  error // io.EOF: clean close
}

// sideStream is one ext_proc gRPC stream, the "side stream" of one HTTP request.
type sideStream struct {
	stream   extprocv3.ExternalProcessor_ProcessClient
	cancel   context.CancelFunc // resets the stream (what Envoy does when the filter is destroyed)
	incoming chan received
	done     chan struct{} // closed when the receiver goroutine ends
	ended    bool          // incoming delivered its final (error) value
	sentAny  bool
}

func openSideStream(client extprocv3.ExternalProcessorClient) (*sideStream, error) {
	// Not the request's context: the stream must outlive ServeHTTP for a graceful close, and
	// a client disconnect cancels it explicitly (exchange.watchClient).
	ctx, cancel := context.WithCancel(context.Background())
	st, err := client.Process(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &sideStream{stream: st, cancel: cancel, incoming: make(chan received, 16), done: make(chan struct{})}
	go s.receive(ctx)
	return s, nil
}

func (s *sideStream) receive(ctx context.Context) {
	defer close(s.done)
	for {
		resp, err := s.stream.Recv()
		select {
		case s.incoming <- received{resp, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// send sends one message. An error here is reported by the next receive, as gRPC does.
func (s *sideStream) send(req *extprocv3.ProcessingRequest) {
	_ = s.stream.Send(req)
}

// closeGracefully half-closes the stream and gives the server deferredCloseTimeout to end
// it before resetting it (Envoy's closeStreamMaybeGraceful after the last answer).
func (s *sideStream) closeGracefully() {
	_ = s.stream.CloseSend()
	go func() {
		t := time.NewTimer(deferredCloseTimeout)
		defer t.Stop()
		for {
			select {
			case r := <-s.incoming:
				if r.err != nil {
					s.cancel()
					return
				}
			case <-s.done:
				s.cancel()
				return
			case <-t.C:
				s.cancel()
				return
			}
		}
	}()
}

// waiter waits for the answer to one message, with Envoy's per-message timer.
type waiter struct {
	s          *sideStream
	timeout    time.Duration
	maxTimeout time.Duration
	clientGone <-chan struct{}
}

// await returns the next answer that is not an override_message_timeout, or why none came.
func (w waiter) await() (*extprocv3.ProcessingResponse, event, error) {
	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	extended := false
	for {
		select {
		case r := <-w.s.incoming:
			if r.err != nil {
				w.s.ended = true
				if errors.Is(r.err, io.EOF) {
					return nil, evClosed, nil
				}
				return nil, evGRPCError, r.err
			}
			if d := r.resp.GetOverrideMessageTimeout(); d != nil {
				// Honoured once per message, only when max_message_timeout is configured
				// and the new value is within it (Filter::onNewTimeout).
				nd := d.AsDuration()
				if w.maxTimeout > 0 && !extended && nd >= time.Millisecond && nd <= w.maxTimeout {
					extended = true
					timer.Reset(nd)
				}
				continue
			}
			return r.resp, evAnswer, nil
		case <-timer.C:
			return nil, evTimeout, nil
		case <-w.clientGone:
			return nil, evClientGone, nil
		}
	}
}

// poll returns a message that arrived while none was awaited, if any: Envoy treats it as
// spurious (or, for a close or an error, as the stream ending).
func (s *sideStream) poll() (received, bool) {
	if s.ended {
		return received{}, false
	}
	select {
	case r := <-s.incoming:
		if r.err != nil {
			s.ended = true
		}
		return r, true
	default:
		return received{}, false
	}
}
