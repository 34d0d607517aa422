package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Decode reads Inputs for namespace from a YAML or JSON stream of Istio
// objects (networking.istio.io and security.istio.io, any served version:
// v1, v1beta1 and v1alpha3 have the same schema) and Services, as
// kubectl get -o yaml prints them. Objects of other namespaces are
// skipped; other kinds are an error.
func Decode(namespace string, data []byte) (Inputs, error) {
	in := Inputs{Namespace: namespace}
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := d.Decode(&raw); errors.Is(err, io.EOF) {
			return in, nil
		} else if err != nil {
			return in, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return in, fmt.Errorf("document %d: %w", i, err)
		}
		if head.Metadata.Namespace != "" && head.Metadata.Namespace != namespace {
			continue
		}
		var err error
		switch head.Kind {
		case KindVirtualService:
			err = decodeInto(raw, &in.VirtualServices)
		case KindDestinationRule:
			err = decodeInto(raw, &in.DestinationRules)
		case KindSidecar:
			err = decodeInto(raw, &in.Sidecars)
		case KindAuthorizationPolicy:
			err = decodeInto(raw, &in.AuthorizationPolicies)
		case KindPeerAuthentication:
			err = decodeInto(raw, &in.PeerAuthentications)
		case "Service":
			var s corev1.Service
			err = json.Unmarshal(raw, &s)
			in.Services = append(in.Services, s)
		default:
			err = fmt.Errorf("kind %q is not one migrate reads (VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication, Sidecar, Service)", head.Kind)
		}
		if err != nil {
			return in, fmt.Errorf("document %d (%s): %w", i, head.Kind, err)
		}
	}
}

func decodeInto[T any](raw []byte, list *[]*T) error {
	var o T
	if err := json.Unmarshal(raw, &o); err != nil {
		return err
	}
	*list = append(*list, &o)
	return nil
}
