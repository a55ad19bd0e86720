package sse

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzScanner feeds arbitrary bytes cut at an arbitrary point and checks the scanner's
// promises: no panic, no byte lost or invented (events plus the leftover are the input), the
// same events whole or split, and usage parsing never panics.
func FuzzScanner(f *testing.F) {
	f.Add([]byte(openAIStream), uint16(17), uint16(0))
	f.Add([]byte(strings.ReplaceAll(openAIStream, "\n", "\r\n")), uint16(1), uint16(64))
	f.Add([]byte("data: {\"error\":{\"message\":\"x\"}}\r\n\r\n: ping\n\ndata: [DONE]\n\n"), uint16(5), uint16(0))
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"), uint16(30), uint16(16))
	f.Add([]byte("\r\r\n\n\n\r\n"), uint16(2), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16, max uint16) {
		c := int(cut) % (len(in) + 1)
		m := int(max)
		whole, wleft := scanAll(t, m, in)
		split, sleft := scanAll(t, m, in[:c], in[c:])
		var w, s []byte
		for _, e := range whole {
			w = append(w, e.Raw...)
			if e.HasUsage || e.HasError {
				_, _ = ParseCompletion(e.Data)
			}
		}
		for _, e := range split {
			s = append(s, e.Raw...)
		}
		if !bytes.Equal(append(w, wleft...), in) {
			t.Fatalf("whole: bytes changed:\n%q\n%q", append(w, wleft...), in)
		}
		if !bytes.Equal(append(s, sleft...), in) {
			t.Fatalf("split at %d: bytes changed:\n%q\n%q", c, append(s, sleft...), in)
		}
		if m == 0 || m >= len(in) {
			// Without an overflow, splitting changes nothing about the events.
			if len(whole) != len(split) {
				t.Fatalf("split at %d: %d events, whole %d", c, len(split), len(whole))
			}
			for i := range whole {
				if whole[i].Kind != split[i].Kind || whole[i].HasUsage != split[i].HasUsage ||
					whole[i].ContentBytes != split[i].ContentBytes || !bytes.Equal(whole[i].Raw, split[i].Raw) {
					t.Fatalf("split at %d: event %d differs: %+v vs %+v", c, i, split[i], whole[i])
				}
			}
		}
	})
}
