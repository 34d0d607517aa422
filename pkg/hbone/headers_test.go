package hbone

import (
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    netip.AddrPort
		wantErr string
	}{
		{name: "IPv4", in: "10.244.2.7:8080", want: netip.MustParseAddrPort("10.244.2.7:8080")},
		{name: "IPv6", in: "[fd00:10:244::7]:8080", want: netip.MustParseAddrPort("[fd00:10:244::7]:8080")},
		{name: "IPv4-mapped IPv6 is unmapped", in: "[::ffff:10.0.0.1]:80", want: netip.MustParseAddrPort("10.0.0.1:80")},
		{name: "IPv4 loopback", in: "127.0.0.1:1", want: netip.MustParseAddrPort("127.0.0.1:1")},
		{name: "IPv6 loopback", in: "[::1]:65535", want: netip.MustParseAddrPort("[::1]:65535")},
		{name: "host name", in: "reviews.default.svc:9080", wantErr: "not ip:port"},
		{name: "IPv4 without port", in: "10.0.0.1", wantErr: "not ip:port"},
		{name: "IPv6 without brackets", in: "fd00::1:80", wantErr: "not ip:port"},
		{name: "IPv6 without port", in: "[fd00::1]", wantErr: "not ip:port"},
		{name: "port zero IPv4", in: "10.0.0.1:0", wantErr: "port 0"},
		{name: "port zero IPv6", in: "[fd00::1]:0", wantErr: "port 0"},
		{name: "port too big", in: "10.0.0.1:65536", wantErr: "not ip:port"},
		{name: "IPv6 zone", in: "[fe80::1%eth0]:80", wantErr: "zone"},
		{name: "unspecified IPv4", in: "0.0.0.0:80", wantErr: "unspecified"},
		{name: "unspecified IPv6", in: "[::]:80", wantErr: "unspecified"},
		{name: "multicast IPv4", in: "224.0.0.1:80", wantErr: "multicast"},
		{name: "multicast IPv6", in: "[ff02::1]:80", wantErr: "multicast"},
		{name: "empty", in: "", wantErr: "not ip:port"},
		{name: "very long", in: strings.Repeat("1", 100), wantErr: "bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthority(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAuthority(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAuthority(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCheckRequest(t *testing.T) {
	v4 := netip.MustParseAddr("10.244.2.7")
	v6 := netip.MustParseAddr("fd00::7")
	tests := []struct {
		name      string
		method    string
		authority string
		local     netip.Addr
		waypoint  bool
		wantCode  int
		wantErr   string
	}{
		{name: "IPv4 match", method: "CONNECT", authority: "10.244.2.7:8080", local: v4, wantCode: 200},
		{name: "IPv6 match", method: "CONNECT", authority: "[fd00::7]:8080", local: v6, wantCode: 200},
		{name: "IPv4-mapped local address", method: "CONNECT", authority: "10.244.2.7:8080", local: netip.MustParseAddr("::ffff:10.244.2.7"), wantCode: 200},
		{name: "GET", method: "GET", authority: "10.244.2.7:8080", local: v4, wantCode: 400, wantErr: "not CONNECT"},
		{name: "POST", method: "POST", authority: "10.244.2.7:8080", local: v4, wantCode: 400, wantErr: "not CONNECT"},
		{name: "bad authority", method: "CONNECT", authority: "reviews:9080", local: v4, wantCode: 400, wantErr: "not ip:port"},
		{name: "IPv4 mismatch", method: "CONNECT", authority: "10.244.2.8:8080", local: v4, wantCode: 400, wantErr: "not the address this connection reached"},
		{name: "IPv6 mismatch", method: "CONNECT", authority: "[fd00::8]:8080", local: v6, wantCode: 400, wantErr: "not the address this connection reached"},
		{name: "family mismatch", method: "CONNECT", authority: "10.244.2.7:8080", local: v6, wantCode: 400, wantErr: "not the address this connection reached"},
		{name: "waypoint IPv4 any destination", method: "CONNECT", authority: "10.244.2.8:8080", local: v4, waypoint: true, wantCode: 200},
		{name: "waypoint IPv6 any destination", method: "CONNECT", authority: "[fd00::8]:8080", local: v6, waypoint: true, wantCode: 200},
		{name: "waypoint still needs CONNECT", method: "GET", authority: "10.244.2.8:8080", local: v4, waypoint: true, wantCode: 400, wantErr: "not CONNECT"},
		{name: "waypoint still needs ip:port", method: "CONNECT", authority: "reviews:9080", local: v4, waypoint: true, wantCode: 400, wantErr: "not ip:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, code, err := CheckRequest(tt.method, tt.authority, tt.local, tt.waypoint)
			if code != tt.wantCode {
				t.Fatalf("code = %d, want %d (err %v)", code, tt.wantCode, err)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || dst != netip.MustParseAddrPort(tt.authority) {
				t.Fatalf("dst = %v, err = %v", dst, err)
			}
		})
	}
}

func TestParseForwarded(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []ForwardedElement
		wantFor netip.AddrPort // of the first element
		wantErr string
	}{
		{name: "IPv4 with port", in: `for="10.244.1.5:43210"`,
			want: []ForwardedElement{{For: "10.244.1.5:43210"}}, wantFor: netip.MustParseAddrPort("10.244.1.5:43210")},
		{name: "IPv6 with port", in: `for="[fd00::5]:43210"`,
			want: []ForwardedElement{{For: "[fd00::5]:43210"}}, wantFor: netip.MustParseAddrPort("[fd00::5]:43210")},
		{name: "IPv4 bare token", in: `for=10.244.1.5`,
			want: []ForwardedElement{{For: "10.244.1.5"}}, wantFor: netip.MustParseAddrPort("10.244.1.5:0")},
		{name: "IPv6 without port", in: `for="[2001:db8:cafe::17]"`,
			want: []ForwardedElement{{For: "[2001:db8:cafe::17]"}}, wantFor: netip.MustParseAddrPort("[2001:db8:cafe::17]:0")},
		{name: "with host", in: `for="10.244.1.5:43210";host=reviews.default.svc.cluster.local`,
			want: []ForwardedElement{{For: "10.244.1.5:43210", Host: "reviews.default.svc.cluster.local"}}, wantFor: netip.MustParseAddrPort("10.244.1.5:43210")},
		{name: "case and spaces", in: `For="10.0.0.1:1" ; HOST=a.b ;proto=http`,
			want: []ForwardedElement{{For: "10.0.0.1:1", Host: "a.b", Proto: "http"}}, wantFor: netip.MustParseAddrPort("10.0.0.1:1")},
		{name: "two hops", in: `for=192.0.2.43, for="[2001:db8:cafe::17]:4711";by=unknown`,
			want: []ForwardedElement{{For: "192.0.2.43"}, {For: "[2001:db8:cafe::17]:4711", By: "unknown"}}, wantFor: netip.MustParseAddrPort("192.0.2.43:0")},
		{name: "obfuscated", in: `for=_hidden;by="_x:_p"`, want: []ForwardedElement{{For: "_hidden", By: "_x:_p"}}},
		{name: "unknown parameter ignored", in: `for=10.0.0.1;secret=x`, want: []ForwardedElement{{For: "10.0.0.1"}}, wantFor: netip.MustParseAddrPort("10.0.0.1:0")},
		{name: "empty pairs and elements", in: `;for=10.0.0.1;, ,`, want: []ForwardedElement{{For: "10.0.0.1"}}, wantFor: netip.MustParseAddrPort("10.0.0.1:0")},
		{name: "quoted pair", in: `host="a\.b"`, want: []ForwardedElement{{Host: "a.b"}}},
		{name: "only unknown parameters", in: `x=1, 0="", for=10.0.0.1`, want: []ForwardedElement{{For: "10.0.0.1"}}, wantFor: netip.MustParseAddrPort("10.0.0.1:0")},
		{name: "empty header", in: ``, want: nil},
		{name: "IPv4 with port unquoted", in: `for=10.0.0.1:80`, wantErr: "unexpected"},
		{name: "IPv6 without brackets", in: `for="2001:db8::1"`, wantErr: "for="},
		{name: "IPv6 bad port", in: `for="[fd00::1]:x"`, wantErr: "bad port"},
		{name: "IPv6 port too long", in: `for="[fd00::1]:123456"`, wantErr: "5 digits"},
		{name: "IPv4 port out of range", in: `for="10.0.0.1:99999"`, wantErr: "bad port"},
		{name: "IPv4 empty port", in: `for="10.0.0.1:"`, wantErr: "empty port"},
		{name: "host name as for", in: `for=example.com`, wantErr: "not an IPv4"},
		{name: "IPv4-mapped IPv6", in: `for="[::ffff:10.0.0.1]"`, wantErr: "bad IPv6"},
		{name: "repeated parameter", in: `for=10.0.0.1;for=10.0.0.2`, wantErr: "repeated"},
		{name: "unterminated quote", in: `for="10.0.0.1`, wantErr: "unterminated"},
		{name: "no value", in: `for`, wantErr: "no value"},
		{name: "empty value", in: `for=`, wantErr: "empty value"},
		{name: "bad host", in: `host="a b"`, wantErr: "not a valid host"},
		{name: "bad proto", in: `proto="1http"`, wantErr: "not a URI scheme"},
		{name: "control character", in: "host=\"a\x01\"", wantErr: "control character"},
		{name: "too long", in: strings.Repeat("a", maxHeaderLen+1), wantErr: "limit"},
		{name: "too many hops", in: strings.Repeat("for=unknown,", maxForwardedHops+1), wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseForwarded(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseForwarded(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseForwarded(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseForwarded(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if len(got) > 0 {
				ap, ok := got[0].ForAddr()
				if ok != tt.wantFor.IsValid() || ap != tt.wantFor {
					t.Fatalf("ForAddr() = %v, %v; want %v", ap, ok, tt.wantFor)
				}
			}
			// Formatting and parsing again gives the same elements.
			back, err := ParseForwarded(FormatForwarded(got))
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip of %q via %q = %+v, %v", tt.in, FormatForwarded(got), back, err)
			}
		})
	}
}

func TestForwardedFor(t *testing.T) {
	tests := []struct {
		name string
		src  netip.AddrPort
		host string
		want string
	}{
		{name: "IPv4", src: netip.MustParseAddrPort("10.244.1.5:43210"), want: `for="10.244.1.5:43210"`},
		{name: "IPv6", src: netip.MustParseAddrPort("[fd00::5]:43210"), host: "reviews.default.svc.cluster.local",
			want: `for="[fd00::5]:43210";host=reviews.default.svc.cluster.local`},
		{name: "IPv4 no port", src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 0), want: `for=10.0.0.1`},
		{name: "IPv6 no port", src: netip.AddrPortFrom(netip.MustParseAddr("fd00::1"), 0), want: `for="[fd00::1]"`},
		{name: "IPv4-mapped", src: netip.MustParseAddrPort("[::ffff:10.0.0.1]:5"), want: `for="10.0.0.1:5"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			el := ForwardedFor(tt.src, tt.host)
			if got := el.String(); got != tt.want {
				t.Fatalf("String() = %s, want %s", got, tt.want)
			}
			back, err := ParseForwarded(el.String())
			if err != nil || len(back) != 1 {
				t.Fatalf("parse back: %v, %v", back, err)
			}
			ap, ok := back[0].ForAddr()
			want := netip.AddrPortFrom(tt.src.Addr().Unmap(), tt.src.Port())
			if !ok || ap != want {
				t.Fatalf("ForAddr() = %v, %v; want %v", ap, ok, want)
			}
		})
	}
}

func TestParseBaggage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Baggage
		wantErr string
	}{
		{name: "istio workload metadata", in: "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1",
			want: Baggage{"k8s.cluster.name": "Kubernetes", "k8s.namespace.name": "default", "k8s.deployment.name": "productpage-v1", "service.name": "productpage", "service.version": "v1"}},
		{name: "spaces and properties", in: " a = 1 ; p1 ; p2=x , b=2",
			want: Baggage{"a": "1", "b": "2"}},
		{name: "percent-encoded", in: "k=hello%20world%2C%3B", want: Baggage{"k": "hello world,;"}},
		{name: "empty value", in: "k=", want: Baggage{"k": ""}},
		{name: "first of repeated key wins", in: "k=1,k=2", want: Baggage{"k": "1"}},
		{name: "empty members", in: ",a=1,,", want: Baggage{"a": "1"}},
		{name: "empty", in: "", want: Baggage{}},
		{name: "no equals", in: "a", wantErr: "no value"},
		{name: "bad key", in: "(a)=1", wantErr: "expected a key"},
		{name: "quote in value", in: `a="1"`, wantErr: "unexpected"},
		{name: "truncated escape", in: "a=%2", wantErr: "truncated"},
		{name: "bad escape", in: "a=%zz", wantErr: "bad percent escape"},
		{name: "bad property", in: "a=1;=x", wantErr: "property key"},
		{name: "too many members", in: strings.Repeat("a=1,", maxBaggageMembers+1), wantErr: "more than"},
		{name: "too long", in: "a=" + strings.Repeat("x", maxHeaderLen), wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBaggage(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBaggage(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseBaggage(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			back, err := ParseBaggage(got.String())
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip via %q = %v, %v", got.String(), back, err)
			}
		})
	}
}

func TestBaggageString(t *testing.T) {
	b := Baggage{"z": "last", "a": "x y,z;%", "bad key": "dropped"}
	if got, want := b.String(), "a=x%20y%2Cz%3B%25,z=last"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{
		`for="10.244.1.5:43210";host=reviews.default.svc.cluster.local`,
		`for="[fd00::5]:43210"`, `for=_x;by=unknown, for=1.2.3.4`, `host="a\"b"`, `;;,,`, `for="[`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		els, err := ParseForwarded(s)
		if err != nil {
			return
		}
		out := FormatForwarded(els)
		back, err := ParseForwarded(out)
		if err != nil {
			t.Fatalf("ParseForwarded(%q) ok, but its formatting %q fails: %v", s, out, err)
		}
		if !reflect.DeepEqual(back, els) {
			t.Fatalf("round trip changed %+v into %+v", els, back)
		}
		for _, e := range els {
			if ap, ok := e.ForAddr(); ok && !ap.Addr().IsValid() {
				t.Fatalf("ForAddr ok with invalid address for %q", e.For)
			}
		}
	})
}

func FuzzParseBaggage(f *testing.F) {
	for _, s := range []string{
		"k8s.namespace.name=default,service.name=productpage", "a=1;p;q=2", "a=%20", "a=%", ",,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBaggage(s)
		if err != nil {
			return
		}
		back, err := ParseBaggage(b.String())
		if err != nil {
			t.Fatalf("ParseBaggage(%q) ok, but its formatting %q fails: %v", s, b.String(), err)
		}
		if !reflect.DeepEqual(back, b) {
			t.Fatalf("round trip changed %v into %v", b, back)
		}
	})
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80", "[fd00::1]:80", "[::ffff:1.2.3.4]:1", "a:1", "[fe80::1%eth0]:1", ""} {
		f.Add(s)
	}
	local := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err == nil {
			if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() || ap.Addr().IsUnspecified() {
				t.Fatalf("ParseAuthority(%q) accepted %v", s, ap)
			}
			again, err := ParseAuthority(ap.String())
			if err != nil || again != ap {
				t.Fatalf("ParseAuthority(%q) = %v, but re-parsing %q gives %v, %v", s, ap, ap.String(), again, err)
			}
		}
		_, code, err := CheckRequest(http.MethodConnect, s, local, false)
		if (code == http.StatusOK) != (err == nil) {
			t.Fatalf("CheckRequest(%q): code %d with err %v", s, code, err)
		}
	})
}
