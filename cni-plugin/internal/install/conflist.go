package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"ambit.dev/cni-plugin/internal/plugin"
)

// Entry is ambit-cni's entry in the node's network configuration list; its
// fields are the plugin's configuration (see plugin.Config).
type Entry struct {
	// Type is always plugin.PluginType; the functions below set it.
	Type              string   `json:"type"`
	AgentSocket       string   `json:"agentSocket,omitempty"`
	AgentTimeout      string   `json:"agentTimeout,omitempty"`
	Kubeconfig        string   `json:"kubeconfig,omitempty"`
	ExcludeNamespaces []string `json:"excludeNamespaces"`
	LogLevel          string   `json:"logLevel,omitempty"`
}

// ConfigExtensions are the extensions of the files kubelet's runtime reads
// network configurations from (libcni.ConfFiles).
var ConfigExtensions = []string{".conf", ".conflist", ".json"}

// PrimaryConfig returns the file of names the runtime uses as the node's
// network: the lexically first with a ConfigExtensions extension, ignoring
// hidden files and ignore (ambit-cni's kubeconfig). ok is false when there
// is none.
func PrimaryConfig(names []string, ignore string) (name string, ok bool) {
	var candidates []string
	for _, n := range names {
		if n == ignore || strings.HasPrefix(n, ".") || !slices.Contains(ConfigExtensions, filepath.Ext(n)) {
			continue
		}
		candidates = append(candidates, n)
	}
	if len(candidates) == 0 {
		return "", false
	}
	slices.Sort(candidates)
	return candidates[0], true
}

// field is one member of a JSON object, kept in file order.
type field struct {
	key string
	val json.RawMessage
}

// parseObject reads a JSON object keeping its members' order and values.
func parseObject(data []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var fields []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("member %q: %w", key, err)
		}
		fields = append(fields, field{key: key, val: val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return fields, nil
}

// formatObject writes fields as a JSON object indented with two spaces and
// ending with a newline; the values keep their member order.
func formatObject(fields []field) ([]byte, error) {
	var compact bytes.Buffer
	compact.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			compact.WriteByte(',')
		}
		var key bytes.Buffer
		enc := json.NewEncoder(&key)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(f.key); err != nil {
			return nil, err
		}
		compact.Write(bytes.TrimSpace(key.Bytes()))
		compact.WriteByte(':')
		if err := json.Compact(&compact, f.val); err != nil {
			return nil, fmt.Errorf("member %q: %w", f.key, err)
		}
	}
	compact.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func lookup(fields []field, key string) (json.RawMessage, int) {
	for i, f := range fields {
		if f.key == key {
			return f.val, i
		}
	}
	return nil, -1
}

func isOurs(p json.RawMessage) bool {
	var t struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(p, &t) == nil && t.Type == plugin.PluginType
}

// asConfList parses conf, a conflist or a single-plugin conf (converted to
// a conflist as libcni does: cniVersion and name lifted, the conf as the
// only plugin), and checks that ambit-cni can be chained in it.
func asConfList(conf []byte) (fields []field, plugins []json.RawMessage, converted bool, err error) {
	fields, err = parseObject(conf)
	if err != nil {
		return nil, nil, false, fmt.Errorf("the CNI configuration is not a JSON object: %w", err)
	}
	var head struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Type       string `json:"type"`
	}
	if err := json.Unmarshal(conf, &head); err != nil {
		return nil, nil, false, fmt.Errorf("the CNI configuration has a bad cniVersion, name or type: %w", err)
	}
	raw, idx := lookup(fields, "plugins")
	switch {
	case idx >= 0:
		if err := json.Unmarshal(raw, &plugins); err != nil {
			return nil, nil, false, fmt.Errorf(`the CNI configuration list's "plugins" is not an array: %w`, err)
		}
	case head.Type != "":
		converted = true
		plugins = []json.RawMessage{slices.Clone(conf)}
		fields = []field{{key: "cniVersion", val: mustMarshal(head.CNIVersion)}, {key: "name", val: mustMarshal(head.Name)}}
	default:
		return nil, nil, false, errors.New(`the CNI configuration has neither "plugins" (a configuration list) nor "type" (a single plugin)`)
	}
	if !slices.Contains(plugin.SupportedVersions.SupportedVersions(), head.CNIVersion) {
		return nil, nil, false, fmt.Errorf("the CNI configuration has cniVersion %q, which ambit-cni does not support (it supports %s)",
			head.CNIVersion, strings.Join(plugin.SupportedVersions.SupportedVersions(), ", "))
	}
	return fields, plugins, converted, nil
}

func mustMarshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func withPlugins(fields []field, plugins []json.RawMessage) ([]byte, error) {
	var list bytes.Buffer
	list.WriteByte('[')
	for i, p := range plugins {
		if i > 0 {
			list.WriteByte(',')
		}
		list.Write(p)
	}
	list.WriteByte(']')
	fields = slices.Clone(fields)
	if _, idx := lookup(fields, "plugins"); idx >= 0 {
		fields[idx].val = list.Bytes()
	} else {
		fields = append(fields, field{key: "plugins", val: list.Bytes()})
	}
	return formatObject(fields)
}

// InsertEntry returns conf with entry as ambit-cni's plugin: in place of
// the first ambit-cni entry when there is one (other ambit-cni entries are
// dropped), else last. conf is a network configuration list, or a single
// plugin configuration which is converted to a list (converted is then
// true: the result must be written to a .conflist file). The other plugins
// and members keep their order and values; the output is indented with two
// spaces, so InsertEntry(InsertEntry(x)) == InsertEntry(x).
func InsertEntry(conf []byte, entry Entry) (out []byte, converted bool, err error) {
	fields, plugins, converted, err := asConfList(conf)
	if err != nil {
		return nil, false, err
	}
	entry.Type = plugin.PluginType
	ours, err := json.Marshal(entry)
	if err != nil {
		return nil, false, err
	}
	var next []json.RawMessage
	placed := false
	for _, p := range plugins {
		if !isOurs(p) {
			next = append(next, p)
			continue
		}
		if !placed {
			next = append(next, ours)
			placed = true
		}
	}
	if !placed {
		next = append(next, ours)
	}
	if isOurs(next[0]) {
		return nil, false, errors.New("the CNI configuration has no primary plugin before ambit-cni (ambit-cni is a chained plugin)")
	}
	out, err = withPlugins(fields, next)
	return out, converted, err
}

// RemoveEntry returns conflist without ambit-cni's entries. When it has
// none, it returns conflist itself and changed is false.
func RemoveEntry(conflist []byte) (out []byte, changed bool, err error) {
	fields, err := parseObject(conflist)
	if err != nil {
		return nil, false, fmt.Errorf("the CNI configuration is not a JSON object: %w", err)
	}
	raw, idx := lookup(fields, "plugins")
	if idx < 0 {
		return conflist, false, nil
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, false, fmt.Errorf(`the CNI configuration list's "plugins" is not an array: %w`, err)
	}
	kept := slices.DeleteFunc(slices.Clone(plugins), isOurs)
	if len(kept) == len(plugins) {
		return conflist, false, nil
	}
	out, err = withPlugins(fields, kept)
	return out, true, err
}

// HasEntry reports whether conf lists ambit-cni.
func HasEntry(conf []byte) bool {
	var list struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	if json.Unmarshal(conf, &list) != nil {
		return false
	}
	return slices.ContainsFunc(list.Plugins, isOurs)
}
