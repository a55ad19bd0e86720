// Package envoy owns Tollgate's Envoy configuration (envoy.yaml) and the code that reads it
// with go-control-plane's own types: the config test parses every YAML file here and runs the
// generated validators on it, and the Envoy emulator in e2e/ reads its routes and ext_proc
// filter from the same parsed bootstrap.
package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// The extensions envoy.yaml names in typed_config; importing them registers their types
	// so that the Anys resolve (an unknown @type is an error, as it is for Envoy).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Load reads an Envoy bootstrap from a YAML file, strictly: unknown fields, wrong types and
// unresolvable typed_config types are errors. It does not run the validators; see Validate.
func Load(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: reading the file the operator names is the point
	if err != nil {
		return nil, fmt.Errorf("envoy config: %w", err)
	}
	b, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("envoy config %s: %w", path, err)
	}
	return b, nil
}

// Parse is Load on bytes.
func Parse(raw []byte) (*bootstrapv3.Bootstrap, error) {
	var doc any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		// yaml.v3 decodes mappings with non-string keys into map[any]any, which JSON refuses.
		return nil, fmt.Errorf("yaml: not representable as JSON (non-string mapping key?): %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("bootstrap v3: %w", err)
	}
	return b, nil
}

// validator is what protoc-gen-validate generates for every message.
type validator interface{ ValidateAll() error }

// Validate runs the generated validators on the bootstrap and on every message inside its
// typed_config Anys (which the generated code does not descend into), reporting every
// violation found, each prefixed with where it is.
func Validate(b *bootstrapv3.Bootstrap) error {
	var errs []error
	if err := b.ValidateAll(); err != nil {
		errs = append(errs, err)
	}
	walkAnys(b.ProtoReflect(), "bootstrap", func(where string, a *anypb.Any) {
		m, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", where, a.GetTypeUrl(), err))
			return
		}
		if v, ok := m.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", where, a.GetTypeUrl(), err))
			}
		}
	})
	return errors.Join(errs...)
}

// walkAnys calls visit for every Any in m, at any depth, including Anys inside Anys.
func walkAnys(m protoreflect.Message, where string, visit func(string, *anypb.Any)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		visit(where, a)
		inner, err := a.UnmarshalNew()
		if err == nil {
			walkAnys(inner.ProtoReflect(), where+"{"+string(inner.ProtoReflect().Descriptor().FullName())+"}", visit)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := where + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkAnys(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAnys(mv.Message(), fmt.Sprintf("%s[%s]", name, k.String()), visit)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkAnys(v.Message(), name, visit)
		}
		return true
	})
}

// Unpack returns the message inside a typed_config, of type T.
func Unpack[T proto.Message](a *anypb.Any) (T, error) {
	var zero T
	m, err := a.UnmarshalNew()
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("typed_config is %s, not %T", a.GetTypeUrl(), zero)
	}
	return t, nil
}
