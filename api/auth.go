package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tollgate-dev/tollgate/paywall"
)

// paywallHandler serves a request authenticated as a paywall.
type paywallHandler func(w http.ResponseWriter, r *http.Request, pw paywall.Paywall)

// userHandler serves a request about one of a paywall's users.
type userHandler func(w http.ResponseWriter, r *http.Request, pw paywall.Paywall, user string)

// withPaywall authenticates the request with the paywall's API key (Authorization: Bearer tg_…).
func (s *Server) withPaywall(next paywallHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r)
		if !ok {
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "missing_api_key", "",
				"Send your paywall's API key as Authorization: Bearer tg_….")
			return
		}
		pw, err := s.deps.Paywalls.ByKey(r.Context(), key)
		if errors.Is(err, paywall.ErrUnknownKey) {
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "",
				"The API key is not valid (unknown, or rotated away). Use the key `tollgate paywall create` or `rotate-key` printed.")
			return
		}
		if err != nil {
			s.unavailable(w, r, "check the API key", err)
			return
		}
		next(w, r, pw)
	}
}

// withUser authenticates the paywall and finds the user: the {user} path segment, or the
// X-Paywall-User header on the /api/v1/user/… routes. When both are present they must agree.
func (s *Server) withUser(next userHandler) http.HandlerFunc {
	return s.withPaywall(func(w http.ResponseWriter, r *http.Request, pw paywall.Paywall) {
		fromPath := r.PathValue("user")
		fromHeader := r.Header.Get("X-Paywall-User")
		user := fromPath
		switch {
		case fromPath != "" && fromHeader != "" && fromHeader != fromPath:
			badRequest(w, "user_mismatch", "user", "The user in the path and in X-Paywall-User differ; send one of them.")
			return
		case fromPath == "" && fromHeader == "":
			badRequest(w, "missing_user", "user", "Name the user in the path (/api/v1/users/{user}/…) or in the X-Paywall-User header.")
			return
		case fromPath == "":
			user = fromHeader
		}
		if err := paywall.ValidUserID(user); err != nil {
			badRequest(w, "invalid_user", "user", userIDProblem(err))
			return
		}
		next(w, r, pw, user)
	})
}

// userIDProblem turns ValidUserID's error into a sentence for the developer.
func userIDProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), paywall.ErrBadUserID.Error()+": ")
	if msg == "" {
		return "The user id is not valid."
	}
	return strings.ToUpper(msg[:1]) + msg[1:] + "."
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
