package install

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// primary is a conflist as a primary CNI writes it (two-space indented).
const primary = `{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [
            {
              "subnet": "10.244.1.0/24"
            }
          ],
          [
            {
              "subnet": "fd00:10:244:1::/64"
            }
          ]
        ]
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      },
      "snat": true
    }
  ]
}
`

var entry = Entry{AgentSocket: "/var/run/ambit/cni.sock", AgentTimeout: "30s", Kubeconfig: "/etc/cni/net.d/ZZZ-ambit-cni-kubeconfig", ExcludeNamespaces: []string{"kube-system"}}

const ours = `{
      "type": "ambit-cni",
      "agentSocket": "/var/run/ambit/cni.sock",
      "agentTimeout": "30s",
      "kubeconfig": "/etc/cni/net.d/ZZZ-ambit-cni-kubeconfig",
      "excludeNamespaces": [
        "kube-system"
      ]
    }`

// withOurs is primary with ours appended.
var withOurs = strings.Replace(primary, `      "snat": true
    }
  ]`, `      "snat": true
    },
    `+ours+`
  ]`, 1)

func TestInsertEntry(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      string
		converted bool
		errHas    string
	}{
		{name: "appended last", in: primary, want: withOurs},
		{name: "already there: unchanged", in: withOurs, want: withOurs},
		{name: "old entry replaced in place", in: `{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"bridge"},{"type":"ambit-cni","agentTimeout":"5s"},{"type":"portmap"}]}`,
			want: `{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"bridge"},` + compact(ours) + `,{"type":"portmap"}]}`},
		{name: "duplicates dropped", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"ambit-cni"},{"type":"ambit-cni"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + compact(ours) + `]}`},
		{name: "member order and values kept", in: `{"name":"n","disableCheck":true,"plugins":[{"z":1.50,"type":"ptp","a":"<&>"}],"cniVersion":"0.3.1"}`,
			want: `{"name":"n","disableCheck":true,"plugins":[{"z":1.50,"type":"ptp","a":"<&>"},` + compact(ours) + `],"cniVersion":"0.3.1"}`},
		{name: "single conf converted", in: `{"cniVersion":"0.3.1","name":"flannel","type":"flannel","delegate":{"hairpinMode":true}}`, converted: true,
			want: `{"cniVersion":"0.3.1","name":"flannel","plugins":[{"cniVersion":"0.3.1","name":"flannel","type":"flannel","delegate":{"hairpinMode":true}},` + compact(ours) + `]}`},
		{name: "not JSON", in: `{"plugins":`, errHas: "not a JSON object"},
		{name: "not an object", in: `[1]`, errHas: "not a JSON object"},
		{name: "neither list nor conf", in: `{"cniVersion":"1.0.0","name":"n"}`, errHas: `neither "plugins"`},
		{name: "plugins not an array", in: `{"cniVersion":"1.0.0","name":"n","plugins":{}}`, errHas: "not an array"},
		{name: "unsupported cniVersion", in: `{"cniVersion":"0.2.0","name":"n","type":"bridge"}`, errHas: `cniVersion "0.2.0", which ambit-cni does not support`},
		{name: "no primary plugin", in: `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, errHas: "no primary plugin"},
		{name: "only ambit-cni", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ambit-cni"}]}`, errHas: "no primary plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, converted, err := InsertEntry([]byte(tt.in), entry)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(out), indent(t, tt.want); got != want {
				t.Errorf("InsertEntry =\n%s\nwant\n%s", got, want)
			}
			if converted != tt.converted {
				t.Errorf("converted = %v, want %v", converted, tt.converted)
			}
			again, _, err := InsertEntry(out, entry)
			if err != nil || string(again) != string(out) {
				t.Errorf("inserting twice changed the file (err %v):\n%s", err, again)
			}
		})
	}
}

func TestRemoveEntry(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		changed bool
		errHas  string
	}{
		{name: "inverse of insert, byte for byte", in: withOurs, want: primary, changed: true},
		{name: "none: same bytes", in: "{ \"plugins\" : [ {\"type\":\"bridge\"} ] }", want: "{ \"plugins\" : [ {\"type\":\"bridge\"} ] }"},
		{name: "every entry", in: `{"name":"n","plugins":[{"type":"ambit-cni"},{"type":"bridge","x":[1,2]},{"type":"ambit-cni"}]}`,
			want: indent(t, `{"name":"n","plugins":[{"type":"bridge","x":[1,2]}]}`), changed: true},
		{name: "single conf untouched", in: `{"name":"n","type":"bridge"}`, want: `{"name":"n","type":"bridge"}`},
		{name: "not JSON", in: `nope`, errHas: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changed, err := RemoveEntry([]byte(tt.in))
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want || changed != tt.changed {
				t.Errorf("RemoveEntry = %v\n%s\nwant %v\n%s", changed, out, tt.changed, tt.want)
			}
			if HasEntry(out) {
				t.Errorf("HasEntry after RemoveEntry")
			}
		})
	}
}

func TestPrimaryConfig(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{name: "lexically first", names: []string{"20-b.conflist", "10-a.conf", "99-z.json"}, want: "10-a.conf"},
		{name: "conf before conflist of same base", names: []string{"10-a.conflist", "10-a.conf"}, want: "10-a.conf"},
		{name: "json counts", names: []string{"20-b.conflist", "05-x.json"}, want: "05-x.json"},
		{name: "hidden and temporary files ignored", names: []string{".00-tmp.conflist", ".10-a.conflist.tmp-1", "20-b.conflist"}, want: "20-b.conflist"},
		{name: "kubeconfig and other files ignored", names: []string{"ZZZ-ambit-cni-kubeconfig", "00-readme.txt", "30-c.conflist"}, want: "30-c.conflist"},
		{name: "ignored even with a config extension", names: []string{"00-kc.conf", "30-c.conflist"}, want: "30-c.conflist"},
		{name: "none", names: []string{"ZZZ-ambit-cni-kubeconfig", "x.yaml"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ignore := "ZZZ-ambit-cni-kubeconfig"
			if tt.name == "ignored even with a config extension" {
				ignore = "00-kc.conf"
			}
			got, ok := PrimaryConfig(tt.names, ignore)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("PrimaryConfig = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func compact(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		panic(err)
	}
	return b.String()
}

// indent formats s as InsertEntry does.
func indent(t *testing.T, s string) string {
	t.Helper()
	fields, err := parseObject([]byte(s))
	if err != nil {
		t.Fatalf("bad test data %q: %v", s, err)
	}
	out, err := formatObject(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
