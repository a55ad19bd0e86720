package mainlib

import (
	"net/http"
)

// apiHandler returns the HTTP API and hosted pages that `tollgate serve` mounts on
// serve.http_addr. This file belongs to the API issue, which replaces the body.
func apiHandler(s *services) (http.Handler, error) {
	return http.NotFoundHandler(), nil
}
