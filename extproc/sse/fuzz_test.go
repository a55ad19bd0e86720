package sse

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// FuzzScanner feeds arbitrary bytes cut at an arbitrary point and checks the scanner's
// promises: no panic, no byte lost or invented (events plus the leftover are the input), the
// same events whole or split, the same events as a plain reading of the SSE specification's
// line rules (refEvents), and usage parsing never panics (nor does counting "text" strings
// too find more content than there are bytes).
func FuzzScanner(f *testing.F) {
	f.Add([]byte(openAIStream), uint16(17), uint16(0))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r\n")), uint16(1), uint16(64))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r")), uint16(40), uint16(0))
	f.Add([]byte("data: {\"error\":{\"message\":\"x\"}}\r\n\r\n: ping\n\ndata: [DONE]\n\n"), uint16(5), uint16(0))
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"), uint16(30), uint16(16))
	f.Add([]byte("\r\r\n\n\n\r\n"), uint16(2), uint16(0))
	// A "\r\n" cut between the chunks, after a data line and after the blank line.
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n"), uint16(8), uint16(0))
	f.Add([]byte("data: a\r\n\r\ndata: b\r\n\r\n"), uint16(10), uint16(0))
	f.Add([]byte("data: a\r\rdata: [DONE]\r\r"), uint16(9), uint16(0))
	f.Add([]byte("data: x\n\r\n\rdata: y\r\n\n"), uint16(9), uint16(0))
	// An event over the limit, cut inside a line, at its "\r" blank line, and with events after.
	f.Add([]byte("data: ok\n\ndata: "+strings.Repeat("x", 40)+"\r\n\r\ndata: [DONE]\n\n"), uint16(30), uint16(16))
	f.Add([]byte("data: "+strings.Repeat("x", 40)+"\r\r: c\n\ndata: {\"usage\":{}}\n\n"), uint16(47), uint16(20))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16, max uint16) {
		c := int(cut) % (len(in) + 1)
		m := int(max)
		whole, wleft := scanAll(t, m, in)
		split, sleft := scanAll(t, m, in[:c], in[c:])
		lastWhole, lwleft := scanAllLast(t, m, in)
		lastSplit, lsleft := scanAllLast(t, m, in[:c], in[c:])
		for _, e := range whole {
			if e.HasUsage || e.HasError {
				_, _ = ParseCompletion(e.Data)
				_, _ = ParseTextCompletion(e.Data)
			}
			if n := contentBytes(e.Data, true); n < 0 || n > len(e.Data) {
				t.Fatalf("%d content bytes in %d bytes of data", n, len(e.Data))
			}
		}
		for _, r := range []struct {
			name string
			evs  []Event
			left []byte
		}{{"whole", whole, wleft}, {"split", split, sleft}, {"whole, last", lastWhole, lwleft}, {"split, last", lastSplit, lsleft}} {
			var got []byte
			for _, e := range r.evs {
				got = append(got, e.Raw...)
			}
			if got = append(got, r.left...); !bytes.Equal(got, in) {
				t.Fatalf("%s (cut %d): bytes changed:\n%q\n%q", r.name, c, got, in)
			}
		}
		if m != 0 && m < len(in) {
			// Which events outgrow the limit depends on where the chunks were cut; the others
			// are found as without one.
			ref := refEvents(in)
			sameOrSkipped(t, "whole", whole, ref, m, false)
			sameOrSkipped(t, "split", split, ref, m, false)
			sameOrSkipped(t, "whole, last", lastWhole, ref, m, true)
			sameOrSkipped(t, "split, last", lastSplit, ref, m, true)
			return
		}
		sameEvents(t, "split", split, whole)
		sameEvents(t, "split, last", lastSplit, lastWhole)
		sameEvents(t, "reference", lastWhole, refEvents(in))
	})
}

// sameOrSkipped checks the events of a scanner with a limit of max bytes per event against the
// reference's: every event it finds is the reference's event at the same offset, and the
// bytes it hands out unread (KindInvalid) belong to events larger than max. With all, every
// reference event of at most max bytes must have been found (a stream read to its end).
func sameOrSkipped(t *testing.T, what string, got, ref []Event, max int, all bool) {
	t.Helper()
	at := map[int]Event{}
	end := map[int]int{} // a reference event's offset for every offset inside it
	off := 0
	for _, e := range ref {
		at[off] = e
		for i := range len(e.Raw) {
			end[off+i] = off
		}
		off += len(e.Raw)
	}
	found := map[int]bool{}
	off = 0
	for i, g := range got {
		if g.Kind == KindInvalid {
			if start, ok := end[off]; ok && len(ref) > 0 && len(at[start].Raw) <= max {
				t.Fatalf("%s: event %d at %d is unread, but the event it belongs to has %d bytes (limit %d)", what, i, off, len(at[start].Raw), max)
			}
			off += len(g.Raw)
			continue
		}
		w, ok := at[off]
		if !ok {
			t.Fatalf("%s: event %d at %d = %+v, where the reference has no event", what, i, off, g)
		}
		sameEvents(t, fmt.Sprintf("%s, event %d", what, i), []Event{g}, []Event{w})
		found[off] = true
		off += len(g.Raw)
	}
	if !all {
		return
	}
	for o, e := range at {
		if len(e.Raw) <= max && !found[o] {
			t.Fatalf("%s: the %d-byte event at %d (limit %d) was not found", what, len(e.Raw), o, max)
		}
	}
}

func sameEvents(t *testing.T, what string, got, want []Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d:\n%+v\n%+v", what, len(got), len(want), got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Kind != w.Kind || !bytes.Equal(g.Raw, w.Raw) || !bytes.Equal(g.Data, w.Data) ||
			(w.Kind == KindData && (g.HasUsage != w.HasUsage || g.ContentBytes != w.ContentBytes)) {
			t.Fatalf("%s: event %d = %+v, want %+v", what, i, g, w)
		}
	}
}

// refEvents reads a whole stream by the SSE specification's rules, plainly: lines end at
// "\r\n", "\n" or "\r"; a blank line ends an event; data lines ("data:" and one optional space)
// are joined with "\n". Bytes after the last blank line are not an event.
func refEvents(in []byte) []Event {
	var evs []Event
	start, lineStart := 0, 0
	var data [][]byte
	for i := 0; i < len(in); i++ {
		if in[i] != '\r' && in[i] != '\n' {
			continue
		}
		line := in[lineStart:i]
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			i++
		}
		lineStart = i + 1
		if len(line) > 0 {
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = append(data, bytes.TrimPrefix(v, []byte(" ")))
			}
			continue
		}
		ev := Event{Raw: in[start : i+1], Kind: KindEmpty}
		if len(data) > 0 {
			ev.Data = bytes.Join(data, []byte("\n"))
			ev.Kind = KindData
			if bytes.Equal(bytes.TrimSpace(ev.Data), []byte("[DONE]")) {
				ev.Kind = KindDone
			}
			scanKeys(&ev, false)
		}
		evs = append(evs, ev)
		start, data = i+1, nil
	}
	return evs
}
