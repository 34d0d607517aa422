package framework

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The local cluster's nodes and pods are network namespaces on the machine
// the tests run on (as root), so a test can look inside a pod's netns the
// way the node agent does: find it by the pod's IP among /proc/*/ns/net.

// PodNetns returns a /proc/<pid>/ns/net path of the network namespace that
// holds podIP.
func PodNetns(podIP string) (string, error) {
	want, err := netip.ParseAddr(podIP)
	if err != nil {
		return "", fmt.Errorf("pod IP %q: %w", podIP, err)
	}
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	seen := map[uint64]bool{}
	var found []string
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		if hasAddr(p, want) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no network namespace on this machine holds %s (is the pod running on the local cluster?)", podIP)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%d network namespaces hold %s: %v", len(found), podIP, found)
	}
}

func hasAddr(nsPath string, want netip.Addr) bool {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return false
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == want {
			return true
		}
	}
	return false
}

// AmbitRules returns the iptables rules Ambit installed in the pod's network
// namespace (the iptables-save lines carrying an "ambit:" comment or an
// AMBIT_ chain), as the machine's iptables (nf_tables) shows them.
func AmbitRules(podIP string) ([]string, error) {
	path, err := PodNetns(podIP)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("nsenter", "--net="+path, "iptables-save").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("iptables-save in the netns of %s: %v: %s", podIP, err, out)
	}
	var rules []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "-A ") && (strings.Contains(l, "AMBIT_") || strings.Contains(l, "ambit:")) {
			rules = append(rules, l)
		}
	}
	return rules, nil
}

// Metrics scrapes a Prometheus endpoint (e.g. a ztunnel's
// http://<node IP>:15020/metrics) and returns its families by name.
func Metrics(url string) (map[string][]model.Sample, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out, err := ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return out, nil
}

// ParseMetrics parses a Prometheus text exposition into samples by family
// name.
func ParseMetrics(r io.Reader) (map[string][]model.Sample, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := map[string][]model.Sample{}
	for name, fam := range fams {
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, fam)
		if err != nil {
			return nil, err
		}
		for _, s := range vec {
			out[name] = append(out[name], *s)
		}
	}
	return out, nil
}
