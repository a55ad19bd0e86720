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
	s := Scanner{MaxEventBytes: max}
	var evs []Event
	for _, c := range chunks {
		s.Reset(c)
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
			evs, left := scanAll(t, 0, []byte(tt.in))
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
// are the same as in one piece: the bytes, the kinds and the flags.
func TestScannerEverySplit(t *testing.T) {
	in := []byte(openAIStream + strings.ReplaceAll(openAIStream, "\n", "\r\n"))
	want, _ := scanAll(t, 0, in)
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j += 7 {
			got, left := scanAll(t, 0, in[:i], in[i:j], in[j:])
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

func TestScannerOverflow(t *testing.T) {
	big := "data: " + strings.Repeat("x", 100)
	evs, left := scanAll(t, 64, []byte("data: ok\n\n"+big[:50]), []byte(big[50:]), []byte("\n\ndata: [DONE]\n\n"))
	if got := kinds(evs); got != "DII" {
		t.Fatalf("kinds %q, want DII", got)
	}
	var all []byte
	for _, e := range evs {
		all = append(all, e.Raw...)
	}
	if want := "data: ok\n\n" + big + "\n\ndata: [DONE]\n\n"; string(all)+string(left) != want {
		t.Fatalf("bytes lost after overflow:\n%q\n%q", all, want)
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
