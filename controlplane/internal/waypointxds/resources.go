package waypointxds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names returns the resource names of typeURL, sorted.
func (r Resources) Names(typeURL string) []string {
	out := make([]string, 0, len(r[typeURL]))
	for n := range r[typeURL] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Version returns a content hash of all resources: equal for equal
// configuration, in any process.
func (r Resources) Version() (string, error) {
	h := sha256.New()
	for _, t := range servedTypes {
		for _, n := range r.Names(t) {
			b, err := cachev3.MarshalResource(r[t][n])
			if err != nil {
				return "", fmt.Errorf("waypointxds: encoding %s %q: %w", t, n, err)
			}
			fmt.Fprintf(h, "%s\x00%s\x00%d\x00", t, n, len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Snapshot returns r as a go-control-plane snapshot, versioned by content.
func (r Resources) Snapshot() (*cachev3.Snapshot, error) {
	v, err := r.Version()
	if err != nil {
		return nil, err
	}
	m := map[string][]types.Resource{}
	for _, t := range servedTypes {
		list := make([]types.Resource, 0, len(r[t]))
		for _, n := range r.Names(t) {
			list = append(list, r[t][n])
		}
		m[t] = list
	}
	return cachev3.NewSnapshot(v, m)
}

// Validate checks every resource with the Envoy protos' validation rules,
// including the typed configs packed in Any fields (which the generated
// Validate does not descend into), that each resource is keyed by its own
// name, and that the set is consistent (every EDS and RDS name referenced
// exists and nothing else does).
func (r Resources) Validate() error {
	var errs []error
	for _, t := range servedTypes {
		for _, n := range r.Names(t) {
			res := r[t][n]
			if got := cachev3.GetResourceName(res); got != n {
				errs = append(errs, fmt.Errorf("%s keyed %q is named %q", t, n, got))
			}
			if err := ValidateDeep(res); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", t, n, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("waypointxds: invalid resources: %w", errors.Join(errs...))
	}
	s, err := r.Snapshot()
	if err != nil {
		return err
	}
	if err := s.Consistent(); err != nil {
		return fmt.Errorf("waypointxds: inconsistent resources: %w", err)
	}
	return nil
}

// validator is implemented by the generated envoy protos (protoc-gen-validate).
type validator interface{ ValidateAll() error }

// ValidateDeep runs the generated validation of m and of every message
// packed in an Any inside it, recursively. An Any of a type that is not
// linked into the binary is an error: it could not be checked.
func ValidateDeep(m protoreflect.ProtoMessage) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	var errs []error
	_ = protorange.Range(m.ProtoReflect(), func(p protopath.Values) error {
		v := p.Index(-1).Value
		msg, ok := v.Interface().(protoreflect.Message)
		if !ok {
			return nil
		}
		a, ok := msg.Interface().(*anypb.Any)
		if !ok {
			return nil
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot decode %s: %w", p.Path[1:], a.GetTypeUrl(), err))
			return nil
		}
		if err := ValidateDeep(inner); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", p.Path[1:], a.GetTypeUrl(), err))
		}
		return nil
	})
	return errors.Join(errs...)
}
