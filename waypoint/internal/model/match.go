package model

import (
	"net/http"
	"regexp"
	"strings"
)

// Request is what route matching sees of an HTTP request, as it arrived
// from the source.
type Request struct {
	// Host is the Host header or :authority.
	Host string
	// Method is the request method (":method").
	Method string
	// Path is the request path as sent, still escaped, without the query
	// (Envoy matches :path without normalising it).
	Path string
	// Query is the raw query string, without "?".
	Query string
	// Header holds the request headers (http.Header canonical keys).
	Header http.Header
}

// PathKind is how a RouteMatch matches the path.
type PathKind uint8

// The path matches of XDS.md §7.1.
const (
	// PathPrefix: the path starts with Path ("" and "/" match all).
	PathPrefix PathKind = iota
	// PathExact: the path equals Path.
	PathExact
	// PathSeparatedPrefix: the path equals Path or starts with Path + "/"
	// (path_separated_prefix).
	PathSeparatedPrefix
	// PathRegex: Regex matches the whole path (safe_regex).
	PathRegex
)

// RouteMatch is Envoy's RouteMatch: the path, and every header and query
// parameter matcher, must match.
type RouteMatch struct {
	Kind PathKind
	// Path is the prefix or exact path (the regex source for PathRegex).
	Path string
	// Regex is the compiled safe_regex of PathRegex, anchored (FullMatch).
	Regex *regexp.Regexp
	// IgnoreCase is Envoy's case_sensitive: false; it does not apply to
	// regexes (as in Envoy).
	IgnoreCase bool
	// Headers and QueryParams must all match.
	Headers     []HeaderMatcher
	QueryParams []QueryParamMatcher
}

// StringMatch matches a value exactly or, with Regex set, by a regular
// expression that must match the whole value.
type StringMatch struct {
	Exact string
	Regex *regexp.Regexp
}

// Matches reports whether v matches.
func (m StringMatch) Matches(v string) bool {
	if m.Regex != nil {
		return m.Regex.MatchString(v)
	}
	return v == m.Exact
}

// HeaderMatcher matches one request header. Name is lower-case; the
// pseudo-headers :method, :authority, :path and :scheme match the
// request line. A header sent several times matches on its values joined
// with "," (Envoy's rule); an absent header never matches.
type HeaderMatcher struct {
	Name  string
	Value StringMatch
}

// QueryParamMatcher matches the first value of a query parameter (Envoy's
// rule: values are compared as sent, not decoded). An absent parameter
// never matches; "?a" has the value "".
type QueryParamMatcher struct {
	Name  string
	Value StringMatch
}

// CompileFullMatch compiles an RE2 expression that must match the whole
// input (Envoy's safe_regex semantics).
func CompileFullMatch(re string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(re); err != nil {
		return nil, err
	}
	return regexp.Compile(`\A(?:` + re + `)\z`)
}

// Matches reports whether req matches m.
func (m RouteMatch) Matches(req Request) bool {
	if !m.pathMatches(req.Path) {
		return false
	}
	for _, h := range m.Headers {
		v, ok := headerValue(req, h.Name)
		if !ok || !h.Value.Matches(v) {
			return false
		}
	}
	for _, q := range m.QueryParams {
		v, ok := QueryValue(req.Query, q.Name)
		if !ok || !q.Value.Matches(v) {
			return false
		}
	}
	return true
}

func (m RouteMatch) pathMatches(path string) bool {
	switch m.Kind {
	case PathRegex:
		return m.Regex != nil && m.Regex.MatchString(path)
	case PathExact:
		if m.IgnoreCase {
			return strings.EqualFold(path, m.Path)
		}
		return path == m.Path
	case PathSeparatedPrefix:
		if !m.hasPrefix(path) {
			return false
		}
		return len(path) == len(m.Path) || path[len(m.Path)] == '/'
	default:
		return m.hasPrefix(path)
	}
}

func (m RouteMatch) hasPrefix(path string) bool {
	if m.IgnoreCase {
		return len(path) >= len(m.Path) && strings.EqualFold(path[:len(m.Path)], m.Path)
	}
	return strings.HasPrefix(path, m.Path)
}

// matchedLen is the length of the part of a matching path that
// prefix_rewrite replaces: the prefix for prefix matches, the whole path
// otherwise (Envoy).
func (m RouteMatch) matchedLen(path string) int {
	switch m.Kind {
	case PathPrefix, PathSeparatedPrefix:
		return min(len(m.Path), len(path))
	}
	return len(path)
}

func headerValue(req Request, name string) (string, bool) {
	switch name {
	case ":method":
		return req.Method, req.Method != ""
	case ":authority":
		return req.Host, req.Host != ""
	case ":path":
		if req.Query != "" {
			return req.Path + "?" + req.Query, true
		}
		return req.Path, true
	case ":scheme":
		return "http", true
	}
	vs := req.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	return strings.Join(vs, ","), true
}

// QueryValue returns the first value of the query parameter name in the
// raw query q, undecoded, as Envoy's route matching reads it.
func QueryValue(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}
