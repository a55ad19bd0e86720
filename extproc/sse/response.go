package sse

import (
	"encoding/json"
	"fmt"
)

// The Responses API (POST /v1/responses) reports its usage in the response object itself: the
// whole body when not streamed, or the response carried by the stream's last event
// (response.completed, response.incomplete or response.failed). A stream can also end in an
// "error" event, whose message is at the top level.

type wireResponseUsage struct {
	InputTokens         *int64             `json:"input_tokens"`
	OutputTokens        *int64             `json:"output_tokens"`
	InputTokensDetails  *promptDetails     `json:"input_tokens_details"`
	OutputTokensDetails *completionDetails `json:"output_tokens_details"`
	Cost                json.RawMessage    `json:"cost"`
}

type wireResponse struct {
	ID     string             `json:"id"`
	Usage  *wireResponseUsage `json:"usage"`
	Error  json.RawMessage    `json:"error"`
	Output []json.RawMessage  `json:"output"`
}

type wireResponseEvent struct {
	wireResponse
	Type     string        `json:"type"`
	Message  string        `json:"message"`
	Response *wireResponse `json:"response"`
}

// outputItem is the part of an output item an estimate counts: a message's text parts, a
// function call's arguments.
type outputItem struct {
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
	Arguments string `json:"arguments"`
}

// finalEvents are the stream events that carry the response as it ended; only their usage is
// the response's (an earlier event's, if a provider filled one in, is not).
var finalEvents = map[string]bool{"response.completed": true, "response.incomplete": true, "response.failed": true}

// ParseResponse decodes the fields metering needs from a Responses API object: a whole
// response, a stream event that carries one (its error and id are read, and its usage when it
// is a final event), or an "error" event. Like ParseCompletion it allocates, so callers use it only for the events the byte scan
// flagged (HasUsage, HasError) and for non-streamed bodies.
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseResponse(data []byte) (Completion, error) {
	var w wireResponseEvent
	if err := json.Unmarshal(data, &w); err != nil {
		return Completion{}, fmt.Errorf("sse: response JSON: %w", err)
	}
	if w.Type == "error" {
		c := Completion{Error: w.Message}
		if c.Error == "" {
			c.Error = "upstream error"
		}
		return c, nil
	}
	r := &w.wireResponse
	if w.Response != nil {
		r = w.Response
	}
	if w.Type != "" && !finalEvents[w.Type] {
		r.Usage = nil
	}
	c := Completion{ID: r.ID}
	for _, raw := range r.Output {
		var it outputItem
		if json.Unmarshal(raw, &it) != nil {
			continue // an item of another shape: nothing to count
		}
		c.OutputBytes += len(it.Arguments)
		for _, p := range it.Content {
			c.OutputBytes += len(p.Text)
		}
	}
	return c, c.read(r.Error, r.Usage.chat())
}

// ParseResponseTail reads the usage of a Responses API stream from the last bytes of it: the
// last "usage" object there, which is the final event's. It is for a stream whose events could
// not be split (one over the scanner's limit), whose final event therefore never came as one.
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseResponseTail(tail []byte) (Completion, error) {
	obj, err := lastUsage(tail)
	if obj == nil {
		return Completion{}, err
	}
	var w wireResponseUsage
	if err := json.Unmarshal(obj, &w); err != nil {
		return Completion{}, fmt.Errorf("sse: response usage JSON: %w", err)
	}
	var c Completion
	return c, c.read(nil, w.chat())
}

// chat is the usage in chat's names (nil for none).
func (w *wireResponseUsage) chat() *wireUsage {
	if w == nil {
		return nil
	}
	return &wireUsage{PromptTokens: w.InputTokens, CompletionTokens: w.OutputTokens,
		PromptTokensDetails: w.InputTokensDetails, CompletionTokensDetails: w.OutputTokensDetails, Cost: w.Cost}
}
