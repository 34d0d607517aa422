package values

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	files := map[string]string{
		"base.yaml":     "trustDomain: cluster.local\nztunnel:\n  logLevel: info\n  image: {tag: dev}\n",
		"override.yaml": "ztunnel:\n  logLevel: debug\n",
		"empty.yaml":    "",
		"list.yaml":     "- a\n- b\n",
		"null.yaml":     "ztunnel:\n  image: null\n",
	}
	read := func(p string) ([]byte, error) {
		s, ok := files[p]
		if !ok {
			return nil, errors.New("no such file")
		}
		return []byte(s), nil
	}
	tests := []struct {
		name  string
		files []string
		sets  []string
		want  map[string]any
	}{
		{"nothing", nil, nil, map[string]any{}},
		{"files merge, later wins", []string{"base.yaml", "override.yaml", "empty.yaml"}, nil,
			map[string]any{"trustDomain": "cluster.local", "ztunnel": map[string]any{"logLevel": "debug", "image": map[string]any{"tag": "dev"}}}},
		{"set over files", []string{"base.yaml"}, []string{"ztunnel.image.tag=v2", "trustDomain=example.org"},
			map[string]any{"trustDomain": "example.org", "ztunnel": map[string]any{"logLevel": "info", "image": map[string]any{"tag": "v2"}}}},
		{"set types like helm", nil, []string{"a=1,b=true,c=x", "l={10.0.0.0/8,fd00::/8}"},
			map[string]any{"a": int64(1), "b": true, "c": "x", "l": []any{"10.0.0.0/8", "fd00::/8"}}},
		{"later set wins", nil, []string{"a=1", "a=2"}, map[string]any{"a": int64(2)}},
		{"null is kept for the chart to drop its default", []string{"base.yaml", "null.yaml"}, nil,
			map[string]any{"trustDomain": "cluster.local", "ztunnel": map[string]any{"logLevel": "info", "image": nil}}},
		{"IPv4 and IPv6 values stay strings", nil, []string{"v4=10.0.0.1", "v6=fd00::1"}, map[string]any{"v4": "10.0.0.1", "v6": "fd00::1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.files, tc.sets, read)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Build = %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	read := func(p string) ([]byte, error) {
		if p == "list.yaml" {
			return []byte("- a\n"), nil
		}
		return nil, errors.New("no such file")
	}
	tests := []struct {
		name  string
		files []string
		sets  []string
		want  string
	}{
		{"missing file", []string{"nope.yaml"}, nil, "reading values file nope.yaml"},
		{"not a map", []string{"list.yaml"}, nil, "values file list.yaml: not a YAML map"},
		{"set without value", nil, []string{"logLevel"}, `--set "logLevel": `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.files, tc.sets, read)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
