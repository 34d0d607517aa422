package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
)

// File is the YAML workloads file (--workloads-file): the stand-alone state
// source, until xDS replaces it. See the ztunnel README for an example.
type File struct {
	Workloads []FileWorkload `yaml:"workloads"`
	Services  []FileService  `yaml:"services"`
	// Policies are Authorization policies (authorization.proto).
	Policies []FilePolicy `yaml:"policies"`
}

// FileWorkload is one workload entry of the file.
type FileWorkload struct {
	UID            string                       `yaml:"uid"`
	Name           string                       `yaml:"name"`
	Namespace      string                       `yaml:"namespace"`
	ServiceAccount string                       `yaml:"serviceAccount"`
	TrustDomain    string                       `yaml:"trustDomain"`
	Node           string                       `yaml:"node"`
	Addresses      []string                     `yaml:"addresses"`
	Protocol       string                       `yaml:"protocol"`
	MTLSMode       string                       `yaml:"mtlsMode"`
	Netns          string                       `yaml:"netns"`
	Services       map[string]map[string]uint32 `yaml:"services"`
	Waypoint       *FileWaypoint                `yaml:"waypoint"`
	Status         string                       `yaml:"status"`
	// AuthorizationPolicies lists the "<namespace>/<name>" of the
	// WORKLOAD_SELECTOR policies that select this workload.
	AuthorizationPolicies []string `yaml:"authorizationPolicies"`
}

// FileService is one service entry of the file.
type FileService struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Hostname  string            `yaml:"hostname"`
	VIPs      []string          `yaml:"vips"`
	Ports     map[string]uint32 `yaml:"ports"`
	Waypoint  *FileWaypoint     `yaml:"waypoint"`
}

// FileWaypoint is a waypoint reference: either the key
// ("namespace/hostname") of the waypoint's Service, whose healthy workloads
// are the waypoint pods, or a fixed address (a waypoint pod IP or the VIP of
// its Service); and the HBONE port (default 15008).
type FileWaypoint struct {
	Service string `yaml:"service"`
	Address string `yaml:"address"`
	Port    uint32 `yaml:"port"`
}

// Parse decodes and validates a workloads file. Unknown fields are errors
// (a typo must not silently change the mesh). defaultTrustDomain fills
// workloads that name none. Every problem found is reported, each naming
// the entry it is in.
func Parse(data []byte, defaultTrustDomain string) (*Snapshot, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("workloads file is not valid YAML of the expected shape: %w", err)
	}
	return f.Build(defaultTrustDomain)
}

// Build validates f and converts it into a Snapshot.
func (f File) Build(defaultTrustDomain string) (*Snapshot, error) {
	if defaultTrustDomain == "" {
		defaultTrustDomain = identity.DefaultTrustDomain
	}
	var errs []error
	services := make([]model.Service, 0, len(f.Services))
	for i, fs := range f.Services {
		s, err := fs.model()
		if err != nil {
			errs = append(errs, fmt.Errorf("services[%d] (%s/%s): %w", i, fs.Namespace, fs.Name, err))
			continue
		}
		services = append(services, s)
	}
	workloads := make([]model.Workload, 0, len(f.Workloads))
	for i, fw := range f.Workloads {
		w, err := fw.model(defaultTrustDomain)
		if err != nil {
			errs = append(errs, fmt.Errorf("workloads[%d] (uid %q): %w", i, fw.UID, err))
			continue
		}
		workloads = append(workloads, w)
	}
	policies := make([]model.Policy, 0, len(f.Policies))
	for i, fp := range f.Policies {
		p, err := fp.model()
		if err != nil {
			errs = append(errs, fmt.Errorf("policies[%d] (%s/%s): %w", i, fp.Namespace, fp.Name, err))
			continue
		}
		policies = append(policies, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return NewSnapshotWithPolicies(workloads, services, policies)
}

func (fw FileWorkload) model(defaultTD string) (model.Workload, error) {
	var errs []error
	w := model.Workload{
		UID:            fw.UID,
		Name:           fw.Name,
		Namespace:      fw.Namespace,
		ServiceAccount: fw.ServiceAccount,
		TrustDomain:    fw.TrustDomain,
		Node:           fw.Node,
		Protocol:       model.Protocol(strings.ToUpper(fw.Protocol)),
		MTLSMode:       model.MTLSMode(strings.ToUpper(fw.MTLSMode)),
		Netns:          fw.Netns,
		Status:         model.Status(strings.ToUpper(fw.Status)),

		AuthorizationPolicies: fw.AuthorizationPolicies,
	}
	if w.UID == "" {
		errs = append(errs, errors.New("uid is required"))
	}
	if w.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if w.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = "default"
	}
	if w.TrustDomain == "" {
		w.TrustDomain = defaultTD
	}
	switch w.Protocol {
	case "":
		w.Protocol = model.ProtocolNone
	case model.ProtocolHBONE, model.ProtocolNone:
	default:
		errs = append(errs, fmt.Errorf("protocol %q: want HBONE or NONE", fw.Protocol))
	}
	switch w.MTLSMode {
	case "":
		w.MTLSMode = model.MTLSPermissive
	case model.MTLSStrict, model.MTLSPermissive:
	default:
		errs = append(errs, fmt.Errorf("mtlsMode %q: want STRICT or PERMISSIVE", fw.MTLSMode))
	}
	switch w.Status {
	case "":
		w.Status = model.StatusHealthy
	case model.StatusHealthy, model.StatusUnhealthy:
	default:
		errs = append(errs, fmt.Errorf("status %q: want HEALTHY or UNHEALTHY", fw.Status))
	}
	if err := w.Identity().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("identity from trustDomain/namespace/serviceAccount: %w", err))
	}
	if len(fw.Addresses) == 0 {
		errs = append(errs, errors.New("addresses: at least one IP address is required"))
	}
	for _, a := range fw.Addresses {
		ip, err := parseUnicast(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("addresses: %w", err))
			continue
		}
		w.Addresses = append(w.Addresses, ip)
	}
	if w.Netns != "" && !filepath.IsAbs(w.Netns) {
		errs = append(errs, fmt.Errorf("netns %q must be an absolute path such as /run/netns/<name>", w.Netns))
	}
	if w.Netns != "" && w.Node == "" {
		errs = append(errs, errors.New("netns is set but node is empty: say which ztunnel captures this workload"))
	}
	if len(fw.Services) > 0 {
		w.Services = make(map[string]model.PortMap, len(fw.Services))
		for key, ports := range fw.Services {
			if ns, host, ok := strings.Cut(key, "/"); !ok || ns == "" || host == "" {
				errs = append(errs, fmt.Errorf("services: key %q must be <namespace>/<hostname>", key))
				continue
			}
			pm, err := portMap(ports)
			if err != nil {
				errs = append(errs, fmt.Errorf("services[%q]: %w", key, err))
				continue
			}
			w.Services[key] = pm
		}
	}
	if fw.Waypoint != nil {
		wp, err := fw.Waypoint.model()
		if err != nil {
			errs = append(errs, fmt.Errorf("waypoint: %w", err))
		}
		w.Waypoint = wp
	}
	return w, errors.Join(errs...)
}

func (fs FileService) model() (model.Service, error) {
	var errs []error
	s := model.Service{Name: fs.Name, Namespace: fs.Namespace, Hostname: fs.Hostname}
	if s.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if s.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if s.Hostname == "" {
		errs = append(errs, errors.New("hostname is required"))
	}
	if strings.Contains(s.Namespace, "/") {
		errs = append(errs, fmt.Errorf("namespace %q must not contain '/'", s.Namespace))
	}
	if len(fs.VIPs) == 0 {
		errs = append(errs, errors.New("vips: at least one virtual IP is required"))
	}
	for _, v := range fs.VIPs {
		ip, err := parseUnicast(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("vips: %w", err))
			continue
		}
		s.VIPs = append(s.VIPs, ip)
	}
	if len(fs.Ports) == 0 {
		errs = append(errs, errors.New("ports: at least one service port is required"))
	}
	pm, err := portMap(fs.Ports)
	if err != nil {
		errs = append(errs, fmt.Errorf("ports: %w", err))
	}
	s.Ports = pm
	if fs.Waypoint != nil {
		wp, err := fs.Waypoint.model()
		if err != nil {
			errs = append(errs, fmt.Errorf("waypoint: %w", err))
		}
		s.Waypoint = wp
	}
	return s, errors.Join(errs...)
}

func (fw FileWaypoint) model() (*model.Waypoint, error) {
	port := fw.Port
	if port == 0 {
		port = 15008
	}
	if port > 65535 {
		return nil, fmt.Errorf("port %d is out of range", port)
	}
	if fw.Service != "" {
		if fw.Address != "" {
			return nil, errors.New("set either service or address, not both")
		}
		if ns, host, ok := strings.Cut(fw.Service, "/"); !ok || ns == "" || host == "" {
			return nil, fmt.Errorf("service %q is not namespace/hostname", fw.Service)
		}
		return &model.Waypoint{Service: fw.Service, Port: uint16(port)}, nil
	}
	ip, err := parseUnicast(fw.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	return &model.Waypoint{Address: ip, Port: uint16(port)}, nil
}

func portMap(in map[string]uint32) (model.PortMap, error) {
	out := make(model.PortMap, len(in))
	var errs []error
	for k, v := range in {
		p, err := model.ParsePort(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if v == 0 || v > 65535 {
			errs = append(errs, fmt.Errorf("target port %d of port %d is not in 1..65535", v, p))
			continue
		}
		out[p] = uint16(v)
	}
	return out, errors.Join(errs...)
}

// parseUnicast parses an IP literal usable as a workload or service
// address.
func parseUnicast(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address literal", s)
	}
	ip = ip.Unmap()
	switch {
	case ip.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q: IPv6 zones are not allowed", s)
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLoopback():
		return netip.Addr{}, fmt.Errorf("%q is not a unicast, non-loopback address", s)
	}
	return ip, nil
}
