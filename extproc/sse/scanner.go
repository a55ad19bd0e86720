// Package sse scans a Server-Sent Events byte stream incrementally, the way an LLM upstream
// sends chat completion chunks or Responses API events: events split across arbitrary chunk boundaries, the three line
// endings the SSE specification allows ("\r\n", "\n" and a lone "\r", also a "\r\n" cut
// between two chunks), comment lines such as ": OPENROUTER PROCESSING", "data: [DONE]" and
// mid-stream error events.
//
// The scanner sits on the hot path of every streamed response chunk, so it only scans bytes:
// it finds event boundaries and the few keys metering needs ("usage", "error", "content",
// "delta", "id") without decoding JSON, and it allocates nothing per chunk once its carry buffer
// has grown to the largest event that straddled a chunk boundary. JSON is decoded only for the
// rare events that need it (ParseCompletion, ParseResponse).
package sse

import (
	"bytes"
)

// DefaultMaxEventBytes bounds how much of one event the scanner buffers across chunks.
const DefaultMaxEventBytes = 1 << 20

// Kind says what an event is.
type Kind uint8

// Event kinds.
const (
	// KindEmpty is an event with no data lines: only comments, blank lines or other fields.
	KindEmpty Kind = iota
	// KindData is an event with a data payload other than [DONE].
	KindData
	// KindDone is "data: [DONE]", the end of an OpenAI stream.
	KindDone
	// KindInvalid is bytes of an event over MaxEventBytes, handed out unread in one or more
	// pieces (the bytes buffered so far, then each chunk's share of the rest) so that they can
	// be passed on unchanged; the scanner finds the events after it as usual.
	KindInvalid
)

// Event is one complete event, or a piece of one over MaxEventBytes (KindInvalid). Its slices
// are valid until the next call to Next or Reset.
type Event struct {
	Kind Kind
	// Raw is the whole event, up to and including the blank line that ends it. For an event
	// begun in an earlier chunk it is a copy held by the scanner; otherwise it is part of the
	// chunk passed to Reset. A KindInvalid piece is only the bytes of its event not handed
	// out before: the first piece whatever the scanner held, each later one the chunk's share.
	Raw []byte
	// Start and End are the part of the current chunk that belongs to this event: for an
	// event begun in an earlier chunk, Start is 0 and Raw is longer than End-Start.
	Start, End int
	// Carried reports whether the event began in an earlier chunk.
	Carried bool
	// Data is the payload: the value of the single data line, or the values of several data
	// lines joined by "\n" (in scanner memory).
	Data []byte
	// HasUsage reports whether Data has a "usage" key with an object value (not null).
	HasUsage bool
	// HasError reports whether Data has an "error" key with an object or string value, or is
	// a Responses API error event ("type": "error").
	HasError bool
	// ContentBytes is the length in bytes of every "content", "reasoning",
	// "reasoning_content" and "delta" string value in Data (and "text", with
	// Scanner.CountText), escapes counted as written.
	ContentBytes int
}

// Scanner splits SSE bytes into events across chunks. The zero value is ready to use with
// DefaultMaxEventBytes; a Scanner is not safe for concurrent use.
type Scanner struct {
	// MaxEventBytes bounds one event; 0 means DefaultMaxEventBytes.
	MaxEventBytes int
	// CountText counts "text" string values in ContentBytes too: a legacy completion's choices
	// carry their output there. (Off for chat, whose reasoning_details repeat the reasoning
	// in "text", and for responses, whose ….done events repeat their deltas.)
	CountText bool

	chunk []byte
	pos   int // next unscanned offset in chunk
	last  bool
	// nl and cr cache the offsets of the next '\n' and '\r' at or after pos (len(chunk): none
	// left; below pos: not searched yet), so that each byte is searched once per chunk
	// whatever the line endings.
	nl, cr int
	// skipLF: the last chunk ended in a '\r' line ending; a '\n' starting this one is the
	// rest of that "\r\n", not a line ending of its own.
	skipLF bool
	// pendingEnd: the current event (all in carry) ended with a blank line whose '\r' was the
	// previous chunk's last byte; it is handed out once the next byte shows whether a '\n'
	// belongs to it.
	pendingEnd bool
	// evCR reports whether the current event has a '\r' line ending (every '\r' is one), so
	// that classify can split the usual "\n"-only events with one byte search per line.
	evCR bool
	// evStart and lineStart are offsets of the current event and line. Negative offsets
	// address carry: offset -k is carry[len(carry)-k].
	evStart, lineStart int
	carry              []byte // bytes of the current event that arrived in earlier chunks
	resetCarry         bool   // carry held the previous event's Raw; clear it before use
	scratch            []byte // joined multi-line data
	// skipping: the current event outgrew MaxEventBytes; its bytes are handed out unread as
	// they come, up to the blank line that ends it. skipMidLine: the chunk before ended inside
	// one of its lines. skipEnd: that blank line's '\r' was the previous chunk's last byte, so the
	// event ends at this chunk's start, with the '\n' (skipLF) that may still belong to it.
	skipping, skipMidLine, skipEnd bool
	ev                             Event
}

// Pending reports how many bytes of an unfinished event the scanner holds.
func (s *Scanner) Pending() int {
	if s.resetCarry {
		return 0
	}
	return len(s.carry)
}

// Reset starts scanning the next chunk of the stream. The chunk must not change until the
// chunk's events have been read.
func (s *Scanner) Reset(chunk []byte) { s.reset(chunk, false) }

// ResetLast is Reset for the stream's last chunk: nothing is held back waiting for a next one
// (an event whose final blank line is a '\r' at the very end is handed out).
func (s *Scanner) ResetLast(chunk []byte) { s.reset(chunk, true) }

func (s *Scanner) reset(chunk []byte, last bool) {
	s.chunk = chunk
	s.pos = 0
	s.last = last
	s.nl, s.cr = -1, -1
	if s.resetCarry {
		s.carry = s.carry[:0]
		s.resetCarry = false
	}
	if len(s.carry) == 0 {
		s.evStart, s.lineStart = 0, 0
	}
	if s.skipping && s.skipMidLine {
		s.lineStart = -1
	}
}

// Next advances to the next complete event in the current chunk and reports whether there is
// one. When it returns false, the chunk's remaining bytes (an unfinished event) are kept for the
// next chunk.
func (s *Scanner) Next() bool {
	if s.resetCarry {
		s.carry = s.carry[:0]
		s.resetCarry = false
		s.evStart, s.lineStart = s.pos, s.pos
	}
	if s.skipping {
		return s.skip()
	}
	b := s.chunk
	s.takeLF()
	if s.pendingEnd && (len(b) > 0 || s.last) {
		// The event ended in the previous chunk; its "\r" may go on with this chunk's '\n'
		// (skipped just above).
		s.pendingEnd = false
		s.emit(s.pos)
		s.evStart, s.lineStart = s.pos, s.pos
		return true
	}
	switch ended, crPending := s.eventEnd(); {
	case ended:
		s.emit(s.pos)
		s.evStart = s.pos
		return true
	case crPending:
		// The event is complete, but a '\n' that starts the next chunk belongs to it.
		s.skipLF, s.pendingEnd = true, true
	}
	// An event larger than MaxEventBytes is handed out as it is, unread (skip).
	return s.keepTail()
}

// eventEnd advances pos line by line to the end of the current event, past the blank line that
// ends it, and reports whether it found it. crPending instead: that blank line's '\r' is the
// last byte of a chunk that is not the stream's last, so a '\n' starting the next chunk may
// belong to it. Neither: the chunk ends inside the event, pos at its unfinished line.
func (s *Scanner) eventEnd() (ended, crPending bool) {
	b := s.chunk
	for s.pos < len(b) {
		end, next, ok := s.lineEnd()
		if !ok {
			return false, false
		}
		blank := end == s.lineStart
		s.pos, s.lineStart = next, next
		s.evCR = s.evCR || b[end] == '\r'
		crAtEnd := end == len(b)-1 && b[end] == '\r' // a lone '\r', the chunk's last byte
		if !blank {
			s.skipLF = crAtEnd
			continue
		}
		return !crAtEnd || s.last, crAtEnd && !s.last
	}
	return false, false
}

// skip hands out the current chunk's share of an event that outgrew MaxEventBytes, up to and
// including the blank line that ends it, as one invalid piece; the events after it are scanned
// as usual. It reports false when the chunk holds nothing to hand out.
func (s *Scanner) skip() bool {
	b := s.chunk
	from := s.pos
	if s.skipEnd {
		if from == len(b) && !s.last {
			return false
		}
		s.skipEnd, s.skipping = false, false
		s.takeLF()
		s.evStart, s.lineStart = s.pos, s.pos
		if s.pos == from {
			return s.Next()
		}
		s.ev = Event{Kind: KindInvalid, Raw: b[from:s.pos], Start: from, End: s.pos}
		return true
	}
	if from == len(b) {
		return false
	}
	s.takeLF()
	switch ended, crPending := s.eventEnd(); {
	case ended:
		s.skipping = false
		s.evStart = s.pos
	case crPending:
		s.skipLF, s.skipEnd = true, true
	default:
		s.pos = len(b) // the rest of the chunk is the event's unfinished line
	}
	s.evCR = false // the event after it starts afresh
	s.skipMidLine = s.lineStart < len(b)
	s.ev = Event{Kind: KindInvalid, Raw: b[from:s.pos], Start: from, End: s.pos}
	return true
}

// takeLF consumes a '\n' that starts the chunk after one that ended in a '\r' line ending: it
// is the rest of that "\r\n", not a line ending of its own.
func (s *Scanner) takeLF() {
	if !s.skipLF || s.pos >= len(s.chunk) {
		return
	}
	s.skipLF = false
	if s.chunk[s.pos] == '\n' {
		s.pos++
		s.lineStart = s.pos
	}
}

// lineEnd finds the next line ending at or after pos: "\r\n", "\n" or a lone "\r". end is the
// offset of its first byte and next the offset after it; ok is false when the chunk has none
// (a '\r' that is the chunk's last byte counts as one: skipLF handles a '\n' after it).
func (s *Scanner) lineEnd() (end, next int, ok bool) {
	b := s.chunk
	if s.nl < s.pos {
		s.nl = len(b)
		if i := bytes.IndexByte(b[s.pos:], '\n'); i >= 0 {
			s.nl = s.pos + i
		}
	}
	if s.cr < s.pos {
		s.cr = len(b)
		if i := bytes.IndexByte(b[s.pos:], '\r'); i >= 0 {
			s.cr = s.pos + i
		}
	}
	switch {
	case s.cr < s.nl:
		if s.cr+1 == s.nl && s.nl < len(b) {
			return s.cr, s.nl + 1, true
		}
		return s.cr, s.cr + 1, true
	case s.nl < len(b):
		return s.nl, s.nl + 1, true
	default:
		return 0, 0, false
	}
}

// Event returns the event found by the last successful Next.
func (s *Scanner) Event() *Event { return &s.ev }

// emit fills s.ev with the event that ends at chunk offset end.
func (s *Scanner) emit(end int) {
	s.ev = Event{End: end}
	if s.evStart < 0 {
		s.carry = append(s.carry, s.chunk[:end]...)
		s.ev.Raw = s.carry
		s.ev.Carried = true
		s.resetCarry = true
	} else {
		s.ev.Raw = s.chunk[s.evStart:end]
		s.ev.Start = s.evStart
	}
	s.classify(&s.ev, s.evCR)
	s.evCR = false
}

// keepTail moves the unfinished event at the end of the chunk into carry. It reports whether
// the event outgrew MaxEventBytes; s.ev is then the invalid piece holding the buffered bytes,
// and the rest of the event is skipped.
func (s *Scanner) keepTail() bool {
	n := len(s.chunk)
	start, carried := s.evStart, s.evStart < 0
	if !carried {
		if start == n {
			s.evStart, s.lineStart = 0, 0
			s.pos = n
			return false
		}
		s.carry = append(s.carry[:0], s.chunk[start:]...)
	} else {
		start = 0
		s.carry = append(s.carry, s.chunk...)
	}
	s.lineStart -= n
	s.evStart = -len(s.carry)
	s.pos = n
	if len(s.carry) <= s.maxEvent() {
		return false
	}
	// A pendingEnd event is complete but for a '\n' that may start the next chunk.
	s.skipping, s.skipEnd, s.skipMidLine = true, s.pendingEnd, s.lineStart < 0
	s.pendingEnd, s.evCR = false, false
	s.ev = Event{Kind: KindInvalid, Raw: s.carry, Start: start, End: n, Carried: carried}
	s.resetCarry = true
	return true
}

// Flush ends the stream: it returns the bytes of an unfinished event (a truncated stream),
// which the caller should pass on, and forgets them. After ResetLast only a truly unfinished
// event is left; after Reset, also one whose last blank line was a '\r' ending the chunk. An
// unfinished event over MaxEventBytes has been handed out already (KindInvalid): nil.
func (s *Scanner) Flush() []byte {
	if s.resetCarry || s.skipping {
		return nil
	}
	tail := s.carry
	s.resetCarry = true
	s.pendingEnd, s.skipLF, s.evCR = false, false, false
	return tail
}

func (s *Scanner) maxEvent() int {
	if s.MaxEventBytes > 0 {
		return s.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

var (
	dataPrefix  = []byte("data:")
	donePayload = []byte("[DONE]")
)

// classify finds the event's data payload and the keys metering needs, by byte scans only.
// hasCR says whether the event has '\r' line endings; without, one search per line does.
func (s *Scanner) classify(ev *Event, hasCR bool) {
	raw := ev.Raw
	var first []byte
	lines := 0
	nl, cr := -1, len(raw) // next '\n' and '\r' at or after off, as in lineEnd
	if hasCR {
		cr = -1
	}
	for off := 0; off < len(raw); {
		if nl < off {
			nl = len(raw)
			if i := bytes.IndexByte(raw[off:], '\n'); i >= 0 {
				nl = off + i
			}
		}
		if cr < off {
			cr = len(raw)
			if i := bytes.IndexByte(raw[off:], '\r'); i >= 0 {
				cr = off + i
			}
		}
		end := min(nl, cr)
		line := raw[off:end]
		off = end + 1
		if end == cr && cr+1 == nl && nl < len(raw) {
			off++
		}
		if !bytes.HasPrefix(line, dataPrefix) {
			continue // comment, blank, or a field we do not use (event:, id:, retry:)
		}
		v := line[len(dataPrefix):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		lines++
		switch lines {
		case 1:
			first = v
		case 2:
			s.scratch = append(append(append(s.scratch[:0], first...), '\n'), v...)
		default:
			s.scratch = append(append(s.scratch, '\n'), v...)
		}
	}
	switch lines {
	case 0:
		ev.Kind = KindEmpty
		return
	case 1:
		ev.Data = first
	default:
		ev.Data = s.scratch
	}
	if bytes.Equal(bytes.TrimSpace(ev.Data), donePayload) {
		ev.Kind = KindDone
		return
	}
	ev.Kind = KindData
	scanKeys(ev, s.CountText)
}

// errorType is the value of an error event's "type".
var errorType = []byte(`"error"`)

// contentBytes is Event.ContentBytes of a JSON payload that did not come through the scanner
// (a buffered, non-streamed completion); countText as Scanner.CountText.
func contentBytes(data []byte, countText bool) int {
	ev := Event{Kind: KindData, Data: data}
	scanKeys(&ev, countText)
	return ev.ContentBytes
}

// scanKeys finds the keys metering needs in one pass over the payload's JSON strings: each
// string is located with a byte search for its quotes, and a string followed by ':' is a key.
// Nothing is decoded. countText: "text" strings are content too.
func scanKeys(ev *Event, countText bool) {
	d := ev.Data
	for i := 0; i < len(d); {
		q := bytes.IndexByte(d[i:], '"')
		if q < 0 {
			return
		}
		from := i + q + 1
		end := closingQuote(d, from)
		if end >= len(d) {
			return
		}
		i = end + 1
		k := skipSpace(d, i)
		if k >= len(d) || d[k] != ':' {
			continue
		}
		name := d[from:end]
		switch len(name) {
		case 4: // type, text
			v := skipSpace(d, k+1)
			switch {
			case string(name) == "type" && bytes.HasPrefix(d[v:], errorType):
				ev.HasError = true
			case countText && string(name) == "text" && v < len(d) && d[v] == '"':
				e := closingQuote(d, v+1)
				ev.ContentBytes += min(e, len(d)) - (v + 1)
				i = e + 1
			}
		case 5: // usage, error, delta
			v := skipSpace(d, k+1)
			if v >= len(d) {
				return
			}
			switch string(name) {
			case "usage":
				ev.HasUsage = ev.HasUsage || d[v] == '{'
			case "error":
				ev.HasError = ev.HasError || d[v] == '{' || d[v] == '"'
			case "delta":
				// A Responses API delta (text, reasoning, tool call arguments) is a string; a
				// chat chunk's delta is an object, whose "content" is counted below.
				if d[v] == '"' {
					e := closingQuote(d, v+1)
					ev.ContentBytes += min(e, len(d)) - (v + 1)
					i = e + 1
				}
			}
		case 7, 9, 17: // content, reasoning, reasoning_content
			if s := string(name); s != "content" && s != "reasoning" && s != "reasoning_content" {
				continue
			}
			v := skipSpace(d, k+1)
			if v >= len(d) || d[v] != '"' {
				continue
			}
			e := closingQuote(d, v+1)
			ev.ContentBytes += min(e, len(d)) - (v + 1)
			i = e + 1
		}
	}
}

// closingQuote returns the offset of the quote that ends the JSON string whose body starts at
// from, or len(d) if it is unterminated.
func closingQuote(d []byte, from int) int {
	for k := from; k < len(d); {
		q := bytes.IndexByte(d[k:], '"')
		if q < 0 {
			return len(d)
		}
		k += q
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for j := k - 1; j >= from && d[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return k
		}
		k++
	}
	return len(d)
}

// StringValue returns the raw (still escaped) string value of the first occurrence of key (a
// quoted key such as `"id"`) in d, or nil. It is used for the provider's response id, once per
// stream.
func StringValue(d []byte, key string) []byte {
	for off := 0; off < len(d); {
		i := bytes.Index(d[off:], []byte(key))
		if i < 0 {
			return nil
		}
		k := skipSpace(d, off+i+len(key))
		off += i + len(key)
		if k >= len(d) || d[k] != ':' {
			continue
		}
		k = skipSpace(d, k+1)
		if k >= len(d) || d[k] != '"' {
			return nil
		}
		return d[k+1 : closingQuote(d, k+1)]
	}
	return nil
}

func skipSpace(d []byte, k int) int {
	for k < len(d) && (d[k] == ' ' || d[k] == '\t' || d[k] == '\n' || d[k] == '\r') {
		k++
	}
	return k
}
