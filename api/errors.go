package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// errorBody is OpenAI's error shape. Action and Link are set when the user must do something
// (authorize the paywall or top up): Message is then the paywall's own text with the link, the
// same the chat shows, ready to render.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
	Action  string `json:"action,omitempty"`
	Link    string `json:"link,omitempty"`
	Success *bool  `json:"success,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a programming error (an unmarshalable type) gets here.
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"Something went wrong on our side; please retry.","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError writes an error. param names the offending request field ("" for none).
func writeError(w http.ResponseWriter, status int, typ, code, param, message string) {
	var b errorBody
	b.Error.Message, b.Error.Type, b.Error.Code = message, typ, code
	if param != "" {
		b.Error.Param = &param
	}
	writeJSON(w, status, b)
}

// Shorthands for the common kinds.

func badRequest(w http.ResponseWriter, code, param, message string) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", code, param, message)
}

func notFoundError(w http.ResponseWriter, message string) {
	writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "", message)
}

func conflict(w http.ResponseWriter, code, message string) {
	writeError(w, http.StatusConflict, "invalid_request_error", code, "", message)
}

// unavailable answers a failure of a store the request needs; the cause goes to the log only.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.opts.Logger.ErrorContext(r.Context(), "api: "+what, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusServiceUnavailable, "server_error", "unavailable", "",
		"The service could not "+what+" right now; please retry in a moment.")
}

// Action codes of the answers that carry a paywall message.
const (
	actionAuthorize = "authorize"
	actionTopUp     = "topup"
)

// writeAction answers that the user must authorize (403) or top up (402), with the paywall's
// rendered message and the page link.
func writeAction(w http.ResponseWriter, action, message, link string) {
	var b errorBody
	status := http.StatusForbidden
	b.Error.Code = "authorization_required"
	if action == actionTopUp {
		status = http.StatusPaymentRequired
		b.Error.Code = "insufficient_funds"
	}
	b.Error.Message, b.Error.Type = message, "paywall_error"
	b.Action, b.Link = action, link
	f := false
	b.Success = &f
	writeJSON(w, status, b)
}

// maxBodyBytes bounds a request body; the largest legitimate one is a charge with metadata.
const maxBodyBytes = 64 << 10

// decodeBody reads a JSON object into v, refusing unknown fields, trailing data and bodies
// over maxBodyBytes; on failure it has written the 400 and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeJSON(w, r, v, false)
}

// decodeOptionalBody is decodeBody for an endpoint whose every field is optional: an empty
// body (or only white space) is the empty object, and leaves v as it was.
func decodeOptionalBody(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeJSON(w, r, v, true)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_media_type", "",
			fmt.Sprintf("Send the body as application/json, not %s.", ct))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return true
		}
		badRequest(w, "invalid_json", "", "The body is not the JSON object this endpoint takes: "+describeJSONError(err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		badRequest(w, "invalid_json", "", "The body has data after its JSON object.")
		return false
	}
	return true
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return "it is empty."
	case errors.As(err, &tooBig):
		return fmt.Sprintf("it is larger than %d bytes.", tooBig.Limit)
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d.", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s.", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ") + "."
	}
	return err.Error()
}
