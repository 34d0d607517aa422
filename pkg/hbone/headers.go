package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Limits on what the header parsers accept.
const (
	maxHeaderLen       = 8192 // bytes of one Forwarded or baggage header
	maxForwardedHops   = 64
	maxBaggageMembers  = 180 // W3C baggage limit
	maxAuthorityLength = 64
)

// ParseAuthority parses an HBONE :authority: a literal IP address and a
// non-zero port, "10.0.0.1:8080" or "[fd00::1]:8080". IPv4-mapped IPv6
// addresses are unmapped; zones, the unspecified address and multicast
// addresses are refused.
func ParseAuthority(s string) (netip.AddrPort, error) {
	if len(s) > maxAuthorityLength {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority is %d bytes long, not an ip:port", len(s))
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q is not ip:port: %w", s, err)
	}
	ip := ap.Addr()
	switch {
	case ip.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q has an IPv6 zone", s)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q has port 0", s)
	case ip.Unmap().IsUnspecified():
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q is the unspecified address", s)
	case ip.Unmap().IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("hbone: :authority %q is a multicast address", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), ap.Port()), nil
}

// ForwardedElement is one element (one hop) of an RFC 7239 Forwarded header.
// HBONE clients send one: for="<source ip:port>" plus host=<service host>
// when the connection was addressed to a service.
type ForwardedElement struct {
	For   string // node: "ip", "ip:port", "[v6]", "[v6]:port", "unknown" or "_obfuscated", optionally with port
	By    string // node, same syntax as For
	Host  string
	Proto string
}

// ForAddr returns the For node as an address; the port is 0 when the node
// has none. ok is false for "unknown", obfuscated or empty nodes.
func (e ForwardedElement) ForAddr() (ap netip.AddrPort, ok bool) {
	ap, isIP, err := parseNode(e.For)
	if err != nil || !isIP {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// ForwardedFor returns the element for a connection from src, with host
// set when the connection was addressed to a service host name.
func ForwardedFor(src netip.AddrPort, host string) ForwardedElement {
	var node string
	switch {
	case src.Port() != 0:
		node = netip.AddrPortFrom(src.Addr().Unmap(), src.Port()).String()
	case src.Addr().Unmap().Is4():
		node = src.Addr().Unmap().String()
	default:
		node = "[" + src.Addr().String() + "]"
	}
	return ForwardedElement{For: node, Host: host}
}

// String formats the element as forwarded-pairs, quoting values that are
// not tokens.
func (e ForwardedElement) String() string {
	var parts []string
	for _, p := range [...]struct{ k, v string }{{"for", e.For}, {"by", e.By}, {"host", e.Host}, {"proto", e.Proto}} {
		if p.v != "" {
			parts = append(parts, p.k+"="+quoteIfNeeded(p.v))
		}
	}
	return strings.Join(parts, ";")
}

// FormatForwarded formats elements as a Forwarded header value.
func FormatForwarded(els []ForwardedElement) string {
	parts := make([]string, 0, len(els))
	for _, e := range els {
		parts = append(parts, e.String())
	}
	return strings.Join(parts, ", ")
}

// ParseForwarded parses an RFC 7239 Forwarded header value (several header
// lines may be joined with ","). Unknown parameters are ignored (an element
// with nothing else is dropped); a
// parameter repeated within one element, a malformed for/by node, host or
// proto is an error.
func ParseForwarded(h string) ([]ForwardedElement, error) {
	if len(h) > maxHeaderLen {
		return nil, fmt.Errorf("hbone: Forwarded header is %d bytes, limit %d", len(h), maxHeaderLen)
	}
	var out []ForwardedElement
	p := scanner{s: h}
	for {
		var el ForwardedElement
		seen := map[string]bool{}
		empty := true
		for { // forwarded-pairs of one element
			p.skipOWS()
			if p.eof() || p.peek() == ',' || p.peek() == ';' {
				// empty pair, allowed by the grammar
			} else {
				name := strings.ToLower(p.token())
				if name == "" {
					return nil, fmt.Errorf("hbone: Forwarded: expected a parameter name at offset %d", p.i)
				}
				if !p.consume('=') {
					return nil, fmt.Errorf("hbone: Forwarded: parameter %q has no value", name)
				}
				v, err := p.value()
				if err != nil {
					return nil, fmt.Errorf("hbone: Forwarded: parameter %q: %w", name, err)
				}
				if seen[name] {
					return nil, fmt.Errorf("hbone: Forwarded: parameter %q repeated in one element", name)
				}
				seen[name] = true
				switch name {
				case "for":
					if _, _, err := parseNode(v); err != nil {
						return nil, fmt.Errorf("hbone: Forwarded: for=%q: %w", v, err)
					}
					el.For = v
					empty = false
				case "by":
					if _, _, err := parseNode(v); err != nil {
						return nil, fmt.Errorf("hbone: Forwarded: by=%q: %w", v, err)
					}
					el.By = v
					empty = false
				case "host":
					if !validHost(v) {
						return nil, fmt.Errorf("hbone: Forwarded: host=%q is not a valid host", v)
					}
					el.Host = v
					empty = false
				case "proto":
					if !validScheme(v) {
						return nil, fmt.Errorf("hbone: Forwarded: proto=%q is not a URI scheme", v)
					}
					el.Proto = v
					empty = false
				}
				p.skipOWS()
			}
			if p.eof() || p.peek() == ',' {
				break
			}
			if !p.consume(';') {
				return nil, fmt.Errorf("hbone: Forwarded: unexpected %q at offset %d", p.peek(), p.i)
			}
		}
		if !empty {
			if len(out) == maxForwardedHops {
				return nil, fmt.Errorf("hbone: Forwarded: more than %d elements", maxForwardedHops)
			}
			out = append(out, el)
		}
		if p.eof() {
			return out, nil
		}
		p.consume(',')
	}
}

// parseNode checks an RFC 7239 node: nodename [ ":" node-port ] where
// nodename is an IPv4 address, a bracketed IPv6 address, "unknown" or an
// obfuscated identifier (_[A-Za-z0-9._-]+), and node-port is 1-5 digits or
// an obfuscated identifier. isIP reports whether the name was an address.
func parseNode(s string) (ap netip.AddrPort, isIP bool, err error) {
	if s == "" {
		return netip.AddrPort{}, false, errors.New("empty node")
	}
	name, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.AddrPort{}, false, errors.New("unterminated [IPv6]")
		}
		name, port = s[:end+1], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return netip.AddrPort{}, false, errors.New("junk after ]")
			}
			port = port[1:]
			if port == "" {
				return netip.AddrPort{}, false, errors.New("empty port")
			}
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 {
		name, port = s[:i], s[i+1:]
		if port == "" {
			return netip.AddrPort{}, false, errors.New("empty port")
		}
	}
	var n uint64
	obfPort := false
	if port != "" {
		if port[0] == '_' {
			if !isObfuscated(port) {
				return netip.AddrPort{}, false, errors.New("bad obfuscated port")
			}
			obfPort = true
		} else {
			if len(port) > 5 {
				return netip.AddrPort{}, false, errors.New("port longer than 5 digits")
			}
			if n, err = strconv.ParseUint(port, 10, 16); err != nil || !allDigits(port) {
				return netip.AddrPort{}, false, errors.New("bad port")
			}
		}
	}
	switch {
	case strings.HasPrefix(name, "["):
		ip, err := netip.ParseAddr(name[1 : len(name)-1])
		if err != nil || !ip.Is6() || ip.Zone() != "" || ip.Is4In6() {
			return netip.AddrPort{}, false, errors.New("bad IPv6 address")
		}
		if obfPort {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPortFrom(ip, uint16(n)), true, nil
	case name == "unknown":
		return netip.AddrPort{}, false, nil
	case strings.HasPrefix(name, "_"):
		if !isObfuscated(name) {
			return netip.AddrPort{}, false, errors.New("bad obfuscated node")
		}
		return netip.AddrPort{}, false, nil
	default:
		ip, err := netip.ParseAddr(name)
		if err != nil || !ip.Is4() {
			return netip.AddrPort{}, false, errors.New("not an IPv4 address, [IPv6] address, \"unknown\" or _obfuscated")
		}
		if obfPort {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPortFrom(ip, uint16(n)), true, nil
	}
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isObfuscated(s string) bool {
	if len(s) < 2 || s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validHost accepts uri-host [ ":" port ] as used in a Host header: a
// reg-name, an IPv4 address or a bracketed IPv6 address, without spaces or
// control characters.
func validHost(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		if _, err := netip.ParseAddr(s[1:end]); err != nil {
			return false
		}
		rest := s[end+1:]
		return rest == "" || rest[0] == ':' && allDigits(rest[1:]) && len(rest) <= 6
	}
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort && (!allDigits(port) || len(port) > 5) {
		return false
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(isAlnum(c) || strings.IndexByte("-._~!$&'()*+,;=%", c) >= 0) {
			return false
		}
	}
	return true
}

func validScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Baggage is the decoded content of a W3C baggage header: key → value.
// Properties are validated but dropped; for a repeated key the first value
// wins.
type Baggage map[string]string

// ParseBaggage parses a W3C baggage header value (several header lines may
// be joined with ","). Values are percent-decoded.
func ParseBaggage(h string) (Baggage, error) {
	if len(h) > maxHeaderLen {
		return nil, fmt.Errorf("hbone: baggage header is %d bytes, limit %d", len(h), maxHeaderLen)
	}
	out := Baggage{}
	p := scanner{s: h}
	members := 0
	for {
		p.skipOWS()
		if !p.eof() && p.peek() != ',' {
			members++
			if members > maxBaggageMembers {
				return nil, fmt.Errorf("hbone: baggage has more than %d members", maxBaggageMembers)
			}
			key := p.token()
			if key == "" {
				return nil, fmt.Errorf("hbone: baggage: expected a key at offset %d", p.i)
			}
			p.skipOWS()
			if !p.consume('=') {
				return nil, fmt.Errorf("hbone: baggage: key %q has no value", key)
			}
			p.skipOWS()
			raw := p.baggageValue()
			val, err := percentDecode(raw)
			if err != nil {
				return nil, fmt.Errorf("hbone: baggage: value of %q: %w", key, err)
			}
			if _, dup := out[key]; !dup {
				out[key] = val
			}
			p.skipOWS()
			for p.consume(';') { // properties: key [ = value ]
				p.skipOWS()
				if p.token() == "" {
					return nil, fmt.Errorf("hbone: baggage: expected a property key at offset %d", p.i)
				}
				p.skipOWS()
				if p.consume('=') {
					p.skipOWS()
					if _, err := percentDecode(p.baggageValue()); err != nil {
						return nil, fmt.Errorf("hbone: baggage: property of %q: %w", key, err)
					}
					p.skipOWS()
				}
			}
		}
		if p.eof() {
			return out, nil
		}
		if !p.consume(',') {
			return nil, fmt.Errorf("hbone: baggage: unexpected %q at offset %d", p.peek(), p.i)
		}
	}
}

// String formats b as a baggage header value with keys sorted; values are
// percent-encoded. Keys that are not HTTP tokens are skipped.
func (b Baggage) String() string {
	keys := make([]string, 0, len(b))
	for k := range b {
		if isToken(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(k)
		sb.WriteByte('=')
		v := b[k]
		for j := 0; j < len(v); j++ {
			c := v[j]
			if isBaggageOctet(c) && c != '%' {
				sb.WriteByte(c)
			} else {
				fmt.Fprintf(&sb, "%%%02X", c)
			}
		}
	}
	return sb.String()
}

func isBaggageOctet(c byte) bool {
	return c == 0x21 || c >= 0x23 && c <= 0x2B || c >= 0x2D && c <= 0x3A || c >= 0x3C && c <= 0x5B || c >= 0x5D && c <= 0x7E
}

func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated percent escape in %q", s)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad percent escape in %q", s)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// scanner is a cursor over a header value.
type scanner struct {
	s string
	i int
}

func (p *scanner) eof() bool  { return p.i >= len(p.s) }
func (p *scanner) peek() byte { return p.s[p.i] }

func (p *scanner) consume(c byte) bool {
	if !p.eof() && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *scanner) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *scanner) token() string {
	start := p.i
	for !p.eof() && isTchar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *scanner) baggageValue() string {
	start := p.i
	for !p.eof() && isBaggageOctet(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// value reads a token or a quoted-string (RFC 9110) and returns it
// unquoted.
func (p *scanner) value() (string, error) {
	if !p.consume('"') {
		v := p.token()
		if v == "" {
			return "", errors.New("empty value")
		}
		return v, nil
	}
	var b strings.Builder
	for {
		if p.eof() {
			return "", errors.New("unterminated quoted string")
		}
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.eof() {
				return "", errors.New("unterminated quoted pair")
			}
			q := p.s[p.i]
			p.i++
			if !isQuotable(q) {
				return "", fmt.Errorf("bad quoted pair \\%q", q)
			}
			b.WriteByte(q)
		case c == '\t' || c == ' ' || c == 0x21 || c >= 0x23 && c <= 0x5B || c >= 0x5D && c <= 0x7E || c >= 0x80:
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("control character %q in quoted string", c)
		}
	}
}

func isQuotable(c byte) bool { return c == '\t' || c == ' ' || c >= 0x21 && c != 0x7F }

func isTchar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func quoteIfNeeded(v string) string {
	if isToken(v) {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}
