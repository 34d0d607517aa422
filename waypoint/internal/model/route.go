package model

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ActionKind is what a route does with a matched request.
type ActionKind uint8

// The route actions of XDS.md §7.1.
const (
	// ActionCluster sends the request to Cluster.
	ActionCluster ActionKind = iota
	// ActionWeighted sends it to one of WeightedClusters.
	ActionWeighted
	// ActionDirect answers DirectStatus locally (direct_response).
	ActionDirect
	// ActionRedirect answers a redirect to Redirect.Location.
	ActionRedirect
)

// Route is one route: the first whose Match matches is used.
type Route struct {
	Name   string
	Match  RouteMatch
	Action ActionKind
	// Cluster receives the matched requests (ActionCluster).
	Cluster string
	// WeightedClusters share them by weight (ActionWeighted); their total
	// weight is positive.
	WeightedClusters []WeightedCluster
	// DirectStatus is the status of a direct response (ActionDirect).
	DirectStatus int
	// Redirect is the redirect (ActionRedirect).
	Redirect *Redirect
	// RequestHeaders change the request sent upstream, ResponseHeaders
	// every response of the route (local ones too, as Envoy does).
	RequestHeaders, ResponseHeaders HeaderMutation
	// Rewrite changes the upstream request's path and Host.
	Rewrite Rewrite
	// Timeout of the whole request, retries included; 0 means none.
	Timeout time.Duration
	// Retry is the retry policy; nil: no retries.
	Retry *RetryPolicy
	// Fault is the route's fault injection (typed_per_filter_config of
	// envoy.filters.http.fault); nil: none. Only applied on chains whose
	// connection manager has the fault filter (Chain.Fault).
	Fault *Fault
}

// WeightedCluster is one cluster of a weighted_clusters action.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// PickWeighted returns the cluster a request with the random number n
// goes to: n modulo the total weight falls in the cluster's interval
// [sum of the weights before it, that sum + its weight) (Envoy's
// pickWeightedCluster). It returns "" when the total weight is 0.
func PickWeighted(cs []WeightedCluster, n uint64) string {
	var total uint64
	for _, c := range cs {
		total += uint64(c.Weight)
	}
	if total == 0 {
		return ""
	}
	n %= total
	for _, c := range cs {
		if n < uint64(c.Weight) {
			return c.Name
		}
		n -= uint64(c.Weight)
	}
	return ""
}

// Rewrite is a route action's URL rewrite: at most one of PrefixRewrite
// and FullPath (regex_rewrite of "^/.*$"), and Host (host_rewrite_literal).
type Rewrite struct {
	PrefixRewrite string
	FullPath      *string
	Host          string
}

// RewritePath returns the upstream path (escaped, without query) for a
// request path that matched r: prefix_rewrite replaces the matched part
// (the prefix of a prefix match, else the whole path), FullPath replaces
// the whole path. Like Envoy, it does not add or remove slashes.
func (r *Route) RewritePath(path string) string {
	switch {
	case r.Rewrite.PrefixRewrite != "":
		return r.Rewrite.PrefixRewrite + path[r.Match.matchedLen(path):]
	case r.Rewrite.FullPath != nil && strings.HasPrefix(path, "/"):
		return *r.Rewrite.FullPath
	}
	return path
}

// Redirect is a redirect action. Empty fields keep the request's value.
type Redirect struct {
	Scheme string
	Host   string
	// Port 0 keeps the request's port (see Location).
	Port uint32
	// Path replaces the path (path_redirect); a query in it replaces the
	// request's query.
	Path string
	// PrefixRewrite replaces the matched prefix (prefix_rewrite).
	PrefixRewrite string
	// Code is 301, 302, 303, 307 or 308.
	Code int
}

// Location returns the Location of the redirect of req matched by m,
// built as Envoy's RouteEntryImplBase::newUri does: the scheme is
// Scheme or the request's ("http": the waypoint serves plaintext HTTP);
// the host is Host, else the request's host, whose port is dropped when
// Port is set, or when the scheme changes away from the X-Forwarded-Proto
// scheme and the port is that scheme's default; Port is appended when
// set; the path is Path (keeping the request's query unless Path has
// one), else the request path with PrefixRewrite applied, and its query.
func (r *Redirect) Location(req Request, m RouteMatch) string {
	scheme := r.Scheme
	if scheme == "" {
		scheme = "http"
	}
	port := ""
	if r.Port != 0 {
		port = ":" + strconv.FormatUint(uint64(r.Port), 10)
	}
	host := r.Host
	if host == "" {
		host = redirectHost(req.Host, req.Header.Get("X-Forwarded-Proto"), scheme, port != "")
	}
	var path string
	switch {
	case r.Path != "" && strings.Contains(r.Path, "?"):
		path = r.Path
	case r.Path != "":
		path = r.Path + query(req.Query)
	case r.PrefixRewrite != "":
		path = r.PrefixRewrite + req.Path[m.matchedLen(req.Path):] + query(req.Query)
	default:
		path = req.Path + query(req.Query)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return scheme + "://" + host + port + path
}

func query(q string) string {
	if q == "" {
		return ""
	}
	return "?" + q
}

// redirectHost is Envoy's processRequestHost.
func redirectHost(host, forwardedProto, scheme string, newPort bool) string {
	var end int
	if strings.HasPrefix(host, "[") {
		if end = strings.LastIndex(host, "]:"); end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndex(host, ":")
	}
	if end < 0 {
		return host
	}
	reqPort := host[end:]
	drop := newPort
	if scheme != forwardedProto {
		drop = drop || (forwardedProto == "https" && reqPort == ":443") || (forwardedProto == "http" && reqPort == ":80")
	}
	if drop {
		return host[:end]
	}
	return host
}

// AppendAction is Envoy's HeaderValueOption.append_action.
type AppendAction uint8

// The append actions, numbered as Envoy's enum.
const (
	// AppendIfExistsOrAdd adds a value (the default).
	AppendIfExistsOrAdd AppendAction = iota
	// AddIfAbsent adds the header only if it is absent.
	AddIfAbsent
	// OverwriteIfExistsOrAdd replaces the header's values.
	OverwriteIfExistsOrAdd
	// OverwriteIfExists replaces the values of a present header only.
	OverwriteIfExists
)

// HeaderValue is one header to add or set.
type HeaderValue struct {
	// Name is lower-case.
	Name, Value string
	Action      AppendAction
}

// HeaderMutation is a route's headers_to_remove and headers_to_add.
type HeaderMutation struct {
	Remove []string
	Add    []HeaderValue
}

// IsZero reports whether m changes nothing.
func (m HeaderMutation) IsZero() bool { return len(m.Remove) == 0 && len(m.Add) == 0 }

// Apply changes h as Envoy's HeaderParser::evaluateHeaders does: first
// the removals, then every overwrite, then every addition; whether a
// header is present (AddIfAbsent, OverwriteIfExists) is decided after the
// removals and before any change; an empty value is not added
// (keep_empty_value false).
func (m HeaderMutation) Apply(h http.Header) {
	for _, name := range m.Remove {
		h.Del(name)
	}
	var set, add []HeaderValue
	for _, v := range m.Add {
		if v.Value == "" {
			continue
		}
		present := len(h.Values(v.Name)) > 0
		switch v.Action {
		case AppendIfExistsOrAdd:
			add = append(add, v)
		case AddIfAbsent:
			if !present {
				add = append(add, v)
			}
		case OverwriteIfExists:
			if present {
				set = append(set, v)
			}
		case OverwriteIfExistsOrAdd:
			set = append(set, v)
		}
	}
	for _, v := range set {
		h.Set(v.Name, v.Value)
	}
	for _, v := range add {
		h.Add(v.Name, v.Value)
	}
}

// ClusterNames returns the clusters the routes of rt send requests to,
// sorted, without duplicates.
func (rt *RouteTable) ClusterNames() []string {
	var out []string
	for _, vh := range rt.VirtualHosts {
		for _, r := range vh.Routes {
			switch r.Action {
			case ActionCluster:
				out = append(out, r.Cluster)
			case ActionWeighted:
				for _, c := range r.WeightedClusters {
					out = append(out, c.Name)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
