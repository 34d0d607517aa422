// Package values builds the Helm values of `ambitctl install` from -f files
// and --set expressions exactly as `helm install -f ... --set ...` does:
// files in order, then --set in order, later wins; maps merge key by key.
// --set is parsed by Helm's own parser (helm.sh/helm/v3/pkg/strvals), so
// a.b=c, a=1,b=2, a={x,y}, a[0].b=c and null (which removes a chart
// default) mean what they mean to helm.
package values

import (
	"fmt"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Build returns the values from files (read with readFile, in order) and
// then sets (in order).
func Build(files, sets []string, readFile func(string) ([]byte, error)) (map[string]any, error) {
	out := map[string]any{}
	for _, f := range files {
		data, err := readFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading values file %s: %w", f, err)
		}
		v, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("values file %s: %w", f, err)
		}
		out = Merge(out, v)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, out); err != nil {
			return nil, fmt.Errorf("--set %q: %w (write key=value, e.g. --set ztunnel.logLevel=debug)", s, err)
		}
	}
	return out, nil
}

// Parse decodes a YAML values document. An empty document is no values.
func Parse(data []byte) (map[string]any, error) {
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("not a YAML map of values (key: value): %w", err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return v, nil
}

// Merge deep-merges src over a copy of dst, as helm merges -f files: maps
// merge key by key, any other value of src (null included, which tells the
// chart to drop its default) replaces dst's.
func Merge(dst, src map[string]any) map[string]any {
	out := make(map[string]any, len(dst)+len(src))
	for k, v := range dst {
		out[k] = v
	}
	for k, sv := range src {
		sm, sok := sv.(map[string]any)
		dm, dok := out[k].(map[string]any)
		if sok && dok {
			out[k] = Merge(dm, sm)
			continue
		}
		out[k] = sv
	}
	return out
}
