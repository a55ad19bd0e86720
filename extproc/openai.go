package extproc

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/paywall"
)

// apiError is an error the client sees, in OpenAI's shape:
// {"error":{"message":…,"type":…,"param":…,"code":…}}.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
}

func badRequest(code, param, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Param: param, Message: msg}
}

func (e *apiError) body() []byte {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}
	in := inner{Message: e.Message, Type: e.Type, Code: e.Code}
	if e.Param != "" {
		in.Param = &e.Param
	}
	b, _ := json.Marshal(struct {
		Error inner `json:"error"`
	}{in}) // plain strings always marshal
	return b
}

// Action is what a paywall message asks the user to do; it is sent as x-tollgate-action.
type Action string

// Actions.
const (
	ActionAuthorize Action = "authorize"
	ActionTopUp     Action = "topup"
)

// ActionHeader names the header of paywall messages.
const ActionHeader = "x-tollgate-action"

// paywallMessage builds the body of a paywall message: a chat.completion, or for streams a
// complete SSE stream of chat.completion.chunk events ending in [DONE], with zero usage.
func paywallMessage(id, model, text string, stream bool, now time.Time) (contentType string, body []byte) {
	created := now.Unix()
	if !stream {
		b, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": model,
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": text},
				"logprobs":      nil,
				"finish_reason": "stop",
			}},
			"usage": zeroUsage(),
		})
		return "application/json", b
	}
	chunk := func(delta map[string]any, finish any, usage any) []byte {
		c := map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}},
		}
		if usage != nil {
			c["usage"] = usage
		}
		b, _ := json.Marshal(c)
		return b
	}
	return "text/event-stream", dataStream(
		chunk(map[string]any{"role": "assistant", "content": text}, nil, nil),
		chunk(map[string]any{}, "stop", zeroUsage()))
}

// dataStream is a whole SSE stream of the events' data, ending in "data: [DONE]" as OpenAI's
// chat and legacy completion streams do.
func dataStream(events ...[]byte) []byte {
	var b bytes.Buffer
	for _, ev := range events {
		b.WriteString("data: ")
		b.Write(ev)
		b.WriteString("\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

func zeroUsage() map[string]any {
	return map[string]any{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
}

// purposeOf maps an action to the hosted page it links to.
func purposeOf(a Action) paywall.Purpose {
	if a == ActionAuthorize {
		return paywall.PurposeAuthorize
	}
	return paywall.PurposeTopUp
}

// contentLength formats a length for the content-length header.
func contentLength(n int) []byte { return strconv.AppendInt(nil, int64(n), 10) }
