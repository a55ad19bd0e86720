package extproc

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/sse"
)

// The billed paths; /v1/{user}/chat/completions, /v1/{user}/responses, /v1/{user}/embeddings
// and /v1/{user}/completions are their user-prefixed forms.
const (
	chatPath        = "/v1/chat/completions"
	responsesPath   = "/v1/responses"
	embeddingsPath  = "/v1/embeddings"
	completionsPath = "/v1/completions"
)

// modelsPath lists the upstream's models; /v1/models/{id} describes one.
const modelsPath = "/v1/models"

// routeKind is what Tollgate does with a request, decided from its method and path alone.
//
// The rule: only /v1/ paths are Tollgate's. Among them, chat completions, responses (creating
// one), embeddings and legacy completions are billed, the model listing is forwarded to the paywall's upstream
// unbilled (it costs the operator nothing), and everything else is refused — an images or audio
// call forwarded with the operator's credentials would be served unbilled, and a billing hole is
// worse than a missing feature.
type routeKind uint8

const (
	// routeNotOurs is a path outside /v1/: passed through untouched (Envoy routes it).
	routeNotOurs routeKind = iota
	// routeChat is POST /v1/chat/completions (or /v1/{user}/chat/completions): billed.
	routeChat
	// routeResponses is POST /v1/responses (or /v1/{user}/responses): billed. Reading,
	// cancelling or deleting a stored response (/v1/responses/{id}…) is unsupported: Tollgate
	// keeps no responses, and the built-in provider's are every app's.
	routeResponses
	// routeEmbeddings is POST /v1/embeddings (or /v1/{user}/embeddings): billed.
	routeEmbeddings
	// routeCompletions is POST /v1/completions (or /v1/{user}/completions), the legacy text
	// completions: billed.
	routeCompletions
	// routeModels is GET /v1/models or /v1/models/{id} (optionally /v1/{user}/…): forwarded
	// to the paywall's upstream with its credentials, nothing held or charged.
	routeModels
	// routeUnsupported is any other /v1/ path: 404 unsupported_endpoint.
	routeUnsupported
	// routeWrongMethod is a supported path with the wrong method: 405 method_not_allowed.
	routeWrongMethod
	// routeBadModelID is /v1/models/{id} whose id is not a plain model id (dot segments,
	// encoded slashes or dots, control characters): 400 invalid_model.
	routeBadModelID
)

// api is the OpenAI API a billed request speaks: it decides how its body is read, where the
// usage is in its response, and the shape of a paywall message.
type api uint8

const (
	apiChat        api = iota // POST /v1/chat/completions
	apiResponses              // POST /v1/responses (responses.go)
	apiEmbeddings             // POST /v1/embeddings (embeddings.go)
	apiCompletions            // POST /v1/completions (completions.go)
)

// apis are what the billed APIs' routes and readers differ in; the rest of a request's life is
// shared (the few differences in how it is held, rewritten and metered are where they act).
var apis = [...]struct {
	kind  routeKind
	path  string // /v1/{user}/… is the same after the user
	label string // of tollgate_extproc_forwarded_total
	parse func(body []byte, lim requestLimits) (chatRequest, *apiError)
	// unpriced refuses, on a built-in paywall, the members parse listed in Unpriced.
	unpriced string
	// usage reads the usage, error and id of a stream event or a whole body.
	usage func(data []byte) (sse.Completion, error)
	// countText: its output is in "text" strings (sse.Scanner.CountText).
	countText bool
	// generations: its id names a generation whose record the built-in provider keeps.
	generations bool
	// message builds its paywall message (nil: embeddings, which answer 402 instead).
	message func(id, model, text string, stream bool, now time.Time) (contentType string, body []byte)
}{
	apiChat: {kind: routeChat, path: chatPath, label: "chat", parse: parseChatRequest, unpriced: unpricedOptions,
		usage: sse.ParseCompletion, generations: true, message: paywallMessage},
	apiResponses: {kind: routeResponses, path: responsesPath, label: "responses", parse: parseResponsesRequest,
		unpriced: unpricedResponsesOptions, usage: sse.ParseResponse, message: responsesPaywallMessage},
	apiEmbeddings: {kind: routeEmbeddings, path: embeddingsPath, label: "embeddings", parse: parseEmbeddingsRequest,
		unpriced: unpricedEmbeddingsOptions, usage: sse.ParseEmbeddings},
	apiCompletions: {kind: routeCompletions, path: completionsPath, label: "completions", parse: parseCompletionsRequest,
		unpriced: unpricedCompletionsOptions, usage: sse.ParseTextCompletion, countText: true, generations: true,
		message: textCompletionPaywallMessage},
}

// route is the classified request line.
type route struct {
	kind routeKind
	// api is a billed route's API.
	api api
	// user is the /v1/{user}/… prefix, "" when there is none.
	user string
	// upstreamPath is the path (without query) to send upstream when it differs from the
	// client's: the user prefix stripped. "" means unchanged.
	upstreamPath string
	// allow is the method the path needs, for 405 answers.
	allow string
}

// classifyRoute decides what to do with method and path (the path without its query).
func classifyRoute(method, path string) route {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		if path == "/v1" {
			return route{kind: routeUnsupported}
		}
		return route{kind: routeNotOurs}
	}
	user, tail, _ := strings.Cut(rest, "/")
	for a, e := range apis {
		// The hot path: no allocation.
		billed := e.path[len("/v1/"):]
		if rest == billed {
			if method != http.MethodPost {
				return route{kind: routeWrongMethod, allow: http.MethodPost}
			}
			return route{kind: e.kind, api: api(a), allow: http.MethodPost}
		}
		// Checked before the models forms, so that a user may be called "models" for chat
		// (/v1/models/chat/completions); /v1/models/responses, /v1/models/embeddings and
		// /v1/models/completions stay model ids, and a user called "models" sends those with
		// the header. (So does a user called "chat" a legacy completion: /v1/chat/completions
		// is chat's, found first.)
		if tail == billed && user != "" && (user != "models" || e.kind == routeChat) {
			r := route{kind: e.kind, api: api(a), allow: http.MethodPost, user: user, upstreamPath: e.path}
			if method != http.MethodPost {
				r.kind = routeWrongMethod
			}
			return r
		}
	}
	var r route
	models := "" // the models form's path after /v1/ and any user prefix
	switch segs := strings.Split(rest, "/"); {
	case segs[0] == "models":
		r, models = route{kind: routeModels, allow: http.MethodGet}, rest
	case len(segs) >= 2 && segs[0] != "" && segs[1] == "models":
		models = strings.Join(segs[1:], "/")
		r = route{kind: routeModels, allow: http.MethodGet, user: segs[0], upstreamPath: "/v1/" + models}
	default:
		return route{kind: routeUnsupported}
	}
	if id, hasID := strings.CutPrefix(models, "models/"); hasID && !validModelID(id) {
		return route{kind: routeBadModelID, user: r.user}
	}
	if method != r.allow {
		r.kind = routeWrongMethod
	}
	return r
}

// validModelID reports whether id, the part of /v1/models/{id} after "models/", is a plain
// model id such as "gpt-4o" or "openai/gpt-4o:free". The id is forwarded to the upstream, so
// it must not be able to name another endpoint there: no empty, "." or ".." segment, no
// backslash, and nothing percent-encoded that decodes to one (or to another '%', which a
// second decoding could turn into one).
func validModelID(id string) bool {
	dec, err := url.PathUnescape(id)
	if err != nil || dec == "" || len(dec) > 512 {
		return false
	}
	for _, seg := range strings.Split(dec, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	for i := 0; i < len(dec); i++ {
		c := dec[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~:@+/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// supportedEndpoints is what an unsupported_endpoint error tells the client it can call.
const supportedEndpoints = "Tollgate serves POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings and POST /v1/completions (billed per request from the user's wallet) and GET /v1/models; other OpenAI endpoints are not available through it."
