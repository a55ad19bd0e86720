package sse

import (
	"bytes"
	"fmt"
	"testing"
)

// benchChunks returns a realistic streamed completion cut into chunks as an upstream flushes
// it: n content chunks, the usage chunk and [DONE], one event per chunk.
func benchChunks(n int) [][]byte {
	var chunks [][]byte
	for i := range n {
		chunks = append(chunks, fmt.Appendf(nil, "data: {\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1764200000,\"model\":\"openai/gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token%03d\"},\"finish_reason\":null}],\"usage\":null}\n\n", i))
	}
	chunks = append(chunks,
		[]byte("data: {\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1764200000,\"model\":\"openai/gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":50,\"total_tokens\":170}}\n\n"),
		[]byte("data: [DONE]\n\n"))
	return chunks
}

func totalLen(chunks [][]byte) int64 {
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	return int64(n)
}

// BenchmarkScan compares the scanner with the cheapest thing that could find event
// boundaries: bytes.Index for "\n\n" over the same chunks. Both report MB/s over the same
// bytes; the scanner also finds usage, errors and counts content.
func BenchmarkScan(b *testing.B) {
	chunks := benchChunks(50)
	b.Run("baseline=bytes.Index", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(totalLen(chunks))
		events := 0
		for b.Loop() {
			for _, c := range chunks {
				for off := 0; ; {
					i := bytes.Index(c[off:], []byte("\n\n"))
					if i < 0 {
						break
					}
					events++
					off += i + 2
				}
			}
		}
		if events == 0 {
			b.Fatal("no events")
		}
	})
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(totalLen(chunks))
		var s Scanner
		content := 0
		for b.Loop() {
			for _, c := range chunks {
				s.Reset(c)
				for s.Next() {
					content += s.Event().ContentBytes
				}
			}
		}
		if content == 0 {
			b.Fatal("no content counted")
		}
	})
}

// BenchmarkScanChunk measures one content chunk, as the processor scans it: 0 allocs/op is the
// goal. The split variant carries half an event over from the previous chunk each time; the
// crlf and cr variants use the other line endings, cr-split cuts a "\r\n" between the chunks.
func BenchmarkScanChunk(b *testing.B) {
	chunk := benchChunks(1)[0]
	for _, v := range []struct {
		name string
		in   []byte
		cut  int
	}{
		{"crlf", bytes.ReplaceAll(chunk, []byte("\n"), []byte("\r\n")), 0},
		{"cr", bytes.ReplaceAll(chunk, []byte("\n"), []byte("\r")), 0},
		{"cr-split", bytes.ReplaceAll(chunk, []byte("\n"), []byte("\r\n")), len(chunk) + 1},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(v.in)))
			var s Scanner
			first, second := v.in[:v.cut], v.in[v.cut:]
			n := 0
			for b.Loop() {
				if len(first) > 0 {
					s.Reset(first)
					for s.Next() {
					}
				}
				s.Reset(second)
				for s.Next() {
					n += s.Event().ContentBytes
				}
			}
			if n == 0 {
				b.Fatal("no content counted")
			}
		})
	}
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(chunk)))
		var s Scanner
		for b.Loop() {
			s.Reset(chunk)
			for s.Next() {
			}
		}
	})
	b.Run("split", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(chunk)))
		h := len(chunk) / 2
		first, second := chunk[:h], chunk[h:]
		var s Scanner
		for b.Loop() {
			s.Reset(first)
			for s.Next() {
			}
			s.Reset(second)
			for s.Next() {
			}
		}
	})
}
