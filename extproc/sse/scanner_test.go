package sse

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// scanAll feeds chunks to a fresh scanner and returns a copy of every event, plus the bytes
// left at the end (Flush).
func scanAll(t testing.TB, max int, chunks ...[]byte) ([]Event, []byte) {
	t.Helper()
	return scan(t, max, false, chunks...)
}

// scanAllLast is scanAll with the last chunk fed by ResetLast, as the processor does.
func scanAllLast(t testing.TB, max int, chunks ...[]byte) ([]Event, []byte) {
	t.Helper()
	return scan(t, max, true, chunks...)
}

func scan(t testing.TB, max int, last bool, chunks ...[]byte) ([]Event, []byte) {
	t.Helper()
	s := Scanner{MaxEventBytes: max}
	var evs []Event
	for i, c := range chunks {
		if last && i == len(chunks)-1 {
			s.ResetLast(c)
		} else {
			s.Reset(c)
		}
		for s.Next() {
			ev := *s.Event()
			ev.Raw = bytes.Clone(ev.Raw)
			ev.Data = bytes.Clone(ev.Data)
			evs = append(evs, ev)
		}
	}
	return evs, bytes.Clone(s.Flush())
}

const openAIStream = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
	": OPENROUTER PROCESSING\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\\"lo\"}}],\"usage\":null}\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"hmm\"}}]}\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19,\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n" +
	"data: [DONE]\n\n"

func kinds(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString([]string{"E", "D", "X", "I"}[e.Kind])
	}
	return b.String()
}

func TestScannerEvents(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		kinds     string
		usage     []bool
		errs      []bool
		content   []int
		leftover  string
		firstData string
	}{
		{
			name: "openai stream", in: openAIStream, kinds: "DEDDDX",
			usage:   []bool{false, false, false, false, true, false},
			content: []int{0, 0, 7, 3, 0, 0},
		},
		{
			name: "crlf", in: strings.ReplaceAll(openAIStream, "\n", "\r\n"), kinds: "DEDDDX",
			usage: []bool{false, false, false, false, true, false},
		},
		{
			name: "lone cr", in: strings.ReplaceAll(openAIStream, "\n", "\r"), kinds: "DEDDDX",
			usage: []bool{false, false, false, false, true, false}, content: []int{0, 0, 7, 3, 0, 0},
		},
		{
			name: "mixed line endings", in: "data: {\"content\":\"ab\"}\r\r\ndata: x\r\ndata: y\n\r: ping\r\n\ndata: [DONE]\r\r",
			kinds: "DDEX", content: []int{2, 0, 0, 0},
		},
		{
			name: "lone cr data lines joined", in: "data: {\"a\":\rdata: 1}\r\r", kinds: "D", firstData: "{\"a\":\n1}",
		},
		{
			name: "cr then lf is one line ending", in: "data: a\r\ndata: b\r\n\r\n", kinds: "D", firstData: "a\nb",
		},
		{
			name: "lf then cr are two", in: "data: a\n\rdata: b\n\n", kinds: "DD", firstData: "a",
		},
		{
			name: "multi-line data joined", in: "data: {\"a\":\ndata: 1}\n\n", kinds: "D",
			firstData: "{\"a\":\n1}",
		},
		{
			name: "data without space and event field", in: "event: x\nid: 3\ndata:[DONE]\n\n", kinds: "X",
		},
		{
			name: "mid-stream error", in: "data: {\"error\":{\"message\":\"overloaded\",\"code\":502}}\n\n", kinds: "D",
			errs: []bool{true},
		},
		{
			name: "null usage and a string equal to the key are not usage", in: "data: {\"usage\" : null,\"content\":\"usage\"}\n\n",
			kinds: "D", usage: []bool{false}, content: []int{5},
		},
		{
			name: "truncated", in: "data: {\"a\":1}\n\ndata: {\"b\"", kinds: "D", leftover: "data: {\"b\"",
		},
		{
			name: "leading blank lines", in: "\n\r\ndata: x\n\n", kinds: "EED",
		},
		{
			name: "unterminated content string", in: "data: {\"content\":\"abc\n\n", kinds: "D", content: []int{3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, left := scanAllLast(t, 0, []byte(tt.in))
			if got := kinds(evs); got != tt.kinds {
				t.Fatalf("kinds %q, want %q", got, tt.kinds)
			}
			var joined []byte
			for i, e := range evs {
				joined = append(joined, e.Raw...)
				if tt.usage != nil && e.HasUsage != tt.usage[i] {
					t.Errorf("event %d HasUsage=%v, want %v", i, e.HasUsage, tt.usage[i])
				}
				if tt.errs != nil && e.HasError != tt.errs[i] {
					t.Errorf("event %d HasError=%v, want %v", i, e.HasError, tt.errs[i])
				}
				if tt.content != nil && e.ContentBytes != tt.content[i] {
					t.Errorf("event %d ContentBytes=%d, want %d", i, e.ContentBytes, tt.content[i])
				}
			}
			if tt.firstData != "" && string(evs[0].Data) != tt.firstData {
				t.Errorf("data %q, want %q", evs[0].Data, tt.firstData)
			}
			if string(left) != tt.leftover {
				t.Errorf("leftover %q, want %q", left, tt.leftover)
			}
			if got := string(joined) + string(left); got != tt.in {
				t.Errorf("events and leftover do not add up to the input:\n%q\n%q", got, tt.in)
			}
		})
	}
}

// TestScannerEverySplit cuts the stream at every pair of positions and checks that the events
// are the same as in one piece: the bytes, the kinds and the flags. The stream mixes the three
// line endings, so some cuts fall between the '\r' and the '\n' of a "\r\n", which must stay
// one line ending; it ends in a lone '\r', which ResetLast hands out.
func TestScannerEverySplit(t *testing.T) {
	in := []byte(openAIStream + strings.ReplaceAll(openAIStream, "\n", "\r\n") + strings.ReplaceAll(openAIStream, "\n", "\r"))
	want, _ := scanAllLast(t, 0, in)
	if len(want) != 18 {
		t.Fatalf("%d events in one piece, want 18", len(want))
	}
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j += 7 {
			got, left := scanAllLast(t, 0, in[:i], in[i:j], in[j:])
			if len(left) != 0 {
				t.Fatalf("split %d,%d: leftover %q", i, j, left)
			}
			if len(got) != len(want) {
				t.Fatalf("split %d,%d: %d events, want %d", i, j, len(got), len(want))
			}
			for k := range got {
				g, w := got[k], want[k]
				if !bytes.Equal(g.Raw, w.Raw) || g.Kind != w.Kind || g.HasUsage != w.HasUsage ||
					g.ContentBytes != w.ContentBytes || !bytes.Equal(g.Data, w.Data) {
					t.Fatalf("split %d,%d: event %d = %+v, want %+v", i, j, k, g, w)
				}
			}
		}
	}
}

// TestScannerSkipsLargeEvent: an event over the limit (an image streamed as one delta, say) is
// handed out unread, wherever the chunks are cut, and the events after it — the usage — are
// found as usual.
func TestScannerSkipsLargeEvent(t *testing.T) {
	large := "data: {\"choices\":[{\"delta\":{\"images\":[{\"image_url\":{\"url\":\"data:image/png;base64," + strings.Repeat("QUJD", 60) + "\"}}]}}]}\n\n"
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" + large + ": ping\n\n" + large +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1290}}\n\ndata: [DONE]\n\n"
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		in := []byte(strings.ReplaceAll(stream, "\n", eol))
		ref := refEvents(in)
		for i := 0; i <= len(in); i += 3 {
			for j := i; j <= len(in); j += 11 {
				got, left := scanAllLast(t, 128, in[:i], in[i:j], in[j:])
				what := fmt.Sprintf("%q split %d,%d", eol, i, j)
				if len(left) != 0 {
					t.Fatalf("%s: leftover %q", what, left)
				}
				sameOrSkipped(t, what, got, ref, 128, true)
				if k := kinds(got); !strings.HasSuffix(k, "DX") || !got[len(got)-2].HasUsage {
					t.Fatalf("%s: kinds %s: the usage after the large events was not found", what, k)
				}
			}
		}
	}
}

// TestScannerSkipsLargeEventInSmallChunks: the same stream fed in chunks of one to five bytes,
// each followed by an empty one, so that an event over the limit is skipped across many chunk
// boundaries — a '\r' ends a chunk inside its lines and at its blank line, and the '\n' of a
// "\r\n" comes alone after an empty chunk — and the events after it are still found.
func TestScannerSkipsLargeEventInSmallChunks(t *testing.T) {
	large := "data: {\"choices\":[{\"delta\":{\"images\":[\"" + strings.Repeat("QUJD", 40) + "\"]}}]}\n: more\n\n"
	stream := large + "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" + large + large +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n"
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		in := []byte(strings.ReplaceAll(stream, "\n", eol))
		ref := refEvents(in)
		for size := 1; size <= 5; size++ {
			var chunks [][]byte
			for i := 0; i < len(in); i += size {
				chunks = append(chunks, in[i:min(i+size, len(in))], nil)
			}
			got, left := scanAllLast(t, 100, chunks...)
			what := fmt.Sprintf("%q in %d-byte chunks", eol, size)
			if len(left) != 0 {
				t.Fatalf("%s: leftover %q", what, left)
			}
			sameOrSkipped(t, what, got, ref, 100, true)
			var all []byte
			for _, e := range got {
				all = append(all, e.Raw...)
			}
			if !bytes.Equal(all, in) {
				t.Fatalf("%s: bytes changed:\n%q\n%q", what, all, in)
			}
			if k := kinds(got); !strings.Contains(k, "I") || !strings.HasSuffix(k, "DX") || !got[len(got)-2].HasUsage {
				t.Fatalf("%s: kinds %s: want the large events unread and the usage after them found", what, k)
			}
		}
	}
}

// TestScannerChunkSpans checks Start/End/Carried: the chunk bytes that belong to each event.
func TestScannerChunkSpans(t *testing.T) {
	s := Scanner{}
	c1 := []byte("data: a\n\ndata: b")
	c2 := []byte("c\n\ndata: d\n\n")
	s.Reset(c1)
	if !s.Next() || s.Event().Start != 0 || s.Event().End != 9 || s.Event().Carried {
		t.Fatalf("first event %+v", s.Event())
	}
	if s.Next() {
		t.Fatal("found an unfinished event")
	}
	if s.Pending() != 7 {
		t.Fatalf("pending %d, want 7", s.Pending())
	}
	s.Reset(c2)
	if !s.Next() || !s.Event().Carried || s.Event().Start != 0 || s.Event().End != 3 ||
		string(s.Event().Raw) != "data: bc\n\n" {
		t.Fatalf("carried event %+v", s.Event())
	}
	if !s.Next() || s.Event().Carried || s.Event().Start != 3 || s.Event().End != len(c2) {
		t.Fatalf("last event %+v", s.Event())
	}
	if s.Next() || s.Pending() != 0 {
		t.Fatal("expected nothing more")
	}
}

// TestScannerCRAcrossChunks: a "\r\n" cut between two chunks is one line ending, never two
// (which would be a blank line, ending the event early), whether the '\r' ends a data line or
// the blank line that ends the event; the '\n' stays with the event it belongs to.
func TestScannerCRAcrossChunks(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		raws   []string
		data   []string
	}{
		{"after a data line", []string{"data: a\r", "\ndata: b\r\n\r\n"}, []string{"data: a\r\ndata: b\r\n\r\n"}, []string{"a\nb"}},
		{"after the blank line", []string{"data: a\r\n\r", "\ndata: b\r\n\r\n"}, []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}, []string{"a", "b"}},
		{"a lone cr, then another event", []string{"data: a\r\r", "data: b\r\r"}, []string{"data: a\r\r", "data: b\r\r"}, []string{"a", "b"}},
		{"the lf alone in its chunk", []string{"data: a\r\r", "\n", "data: b\n\n"}, []string{"data: a\r\r\n", "data: b\n\n"}, []string{"a", "b"}},
		{"an empty chunk between", []string{"data: a\r", "", "\n\n"}, []string{"data: a\r\n\n"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var chunks [][]byte
			for _, c := range tt.chunks {
				chunks = append(chunks, []byte(c))
			}
			evs, left := scanAllLast(t, 0, chunks...)
			if len(left) != 0 || len(evs) != len(tt.raws) {
				t.Fatalf("%d events %+v, leftover %q; want %q", len(evs), evs, left, tt.raws)
			}
			for i, e := range evs {
				if string(e.Raw) != tt.raws[i] || string(e.Data) != tt.data[i] || e.Kind != KindData {
					t.Errorf("event %d: raw %q data %q kind %d, want %q %q", i, e.Raw, e.Data, e.Kind, tt.raws[i], tt.data[i])
				}
			}
		})
	}
	// Without ResetLast the scanner cannot know whether a '\n' follows the final '\r': the
	// event waits, and Flush hands its bytes out.
	evs, left := scanAll(t, 0, []byte("data: a\n\ndata: b\r\r"))
	if len(evs) != 1 || string(left) != "data: b\r\r" {
		t.Errorf("events %d, leftover %q", len(evs), left)
	}
}

func TestScannerOverflow(t *testing.T) {
	big := "data: " + strings.Repeat("x", 100)
	evs, left := scanAll(t, 64, []byte("data: ok\n\n"+big[:50]), []byte(big[50:]), []byte("\n\ndata: [DONE]\n\n"))
	if got := kinds(evs); got != "DIIX" {
		t.Fatalf("kinds %q, want DIIX: the event after the large one is found", got)
	}
	var all []byte
	for _, e := range evs {
		all = append(all, e.Raw...)
	}
	if want := "data: ok\n\n" + big + "\n\ndata: [DONE]\n\n"; string(all)+string(left) != want {
		t.Fatalf("bytes lost after overflow:\n%q\n%q", all, want)
	}
}

// TestCountText: a legacy completion's output is in its choices' "text", counted only when
// asked (chat's reasoning_details repeat the reasoning there), streamed or whole.
func TestCountText(t *testing.T) {
	chunk := `data: {"id":"cmpl-1","object":"text_completion","choices":[{"text":"Hel\"lo","index":0,"logprobs":null,"finish_reason":null}]}` + "\n\n"
	for _, count := range []bool{false, true} {
		s := Scanner{CountText: count}
		s.Reset([]byte(chunk))
		if !s.Next() {
			t.Fatal("no event")
		}
		if got, want := s.Event().ContentBytes, map[bool]int{false: 0, true: 7}[count]; got != want {
			t.Errorf("CountText %v: %d content bytes, want %d", count, got, want)
		}
	}
	body := `{"id":"cmpl-1","object":"text_completion","choices":[{"text":"four","index":0},{"text":"five!","index":1}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`
	c, err := ParseTextCompletion([]byte(body))
	if err != nil || c.OutputBytes != 9 || c.Choices != 2 || c.Usage == nil || c.Usage.CompletionTokens != 4 || c.ID != "cmpl-1" {
		t.Errorf("ParseTextCompletion = %+v, %v", c, err)
	}
	if c, _ := ParseCompletion([]byte(body)); c.OutputBytes != 0 {
		t.Errorf("ParseCompletion counted %d bytes of text", c.OutputBytes)
	}
}

func TestParseCompletion(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Usage
		errWant error
		errMsg  string
	}{
		{name: "usage chunk", in: `{"id":"gen-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":1},"completion_tokens_details":{"reasoning_tokens":2}}}`,
			want: &Usage{PromptTokens: 12, CompletionTokens: 7, CachedTokens: 4, CacheWriteTokens: 1, ReasoningTokens: 2}},
		{name: "no usage", in: `{"id":"x","choices":[{}]}`},
		{name: "negative", in: `{"usage":{"prompt_tokens":-1,"completion_tokens":1}}`, errWant: ErrBadUsage},
		{name: "missing counts", in: `{"usage":{"total_tokens":3}}`, errWant: ErrBadUsage},
		{name: "absurd", in: `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}}`, errWant: ErrBadUsage},
		{name: "cached over prompt", in: `{"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}`, errWant: ErrBadUsage},
		{name: "error object", in: `{"error":{"message":"rate limited","code":429}}`, errMsg: "rate limited"},
		{name: "error string", in: `{"error":"boom"}`, errMsg: "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCompletion([]byte(tt.in))
			if tt.errWant != nil {
				if !errors.Is(err, tt.errWant) {
					t.Fatalf("err %v, want %v", err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(c.Usage) != fmt.Sprint(tt.want) && (c.Usage == nil || tt.want == nil || *c.Usage != *tt.want) {
				t.Errorf("usage %+v, want %+v", c.Usage, tt.want)
			}
			if c.Error != tt.errMsg {
				t.Errorf("error %q, want %q", c.Error, tt.errMsg)
			}
		})
	}
	if _, err := ParseCompletion([]byte("{")); err == nil {
		t.Error("bad JSON accepted")
	}
}

func TestStringValue(t *testing.T) {
	d := []byte(`{"object":"x", "id" : "gen-\"q\"-1","choices":[]}`)
	if got := string(StringValue(d, `"id"`)); got != `gen-\"q\"-1` {
		t.Errorf("got %q", got)
	}
	if StringValue([]byte(`{"id":5}`), `"id"`) != nil {
		t.Error("non-string id returned")
	}
}
