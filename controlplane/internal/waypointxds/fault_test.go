package waypointxds

import (
	"strings"
	"testing"
	"time"
)

// faultInput is the example service with HTTPFault routes (XDS.md §15):
// a delay, an HTTP abort of half the requests, a gRPC abort combined with
// a delay, and the 500 of a rule whose HTTPFault does not resolve.
func faultInput() Input {
	in := exampleInput()
	web := Backend{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}
	in.Services[0].Ports[0].Routes = []Route{
		{Name: "demo.faults.0.0", Match: RouteMatch{PathType: PathPrefix, Path: "/slow"}, Backends: []Backend{web},
			Fault: &Fault{Delay: &FaultDelay{Fixed: 200 * time.Millisecond, Percent: 100}}},
		{Name: "demo.faults.1.0", Match: RouteMatch{PathType: PathPrefix, Path: "/flaky"}, Backends: []Backend{web},
			Fault: &Fault{Abort: &FaultAbort{HTTPStatus: 503, Percent: 50}}},
		{Name: "demo.faults.2.0", Match: RouteMatch{PathType: PathPrefix, Path: "/grpc"}, Backends: []Backend{web},
			Fault: &Fault{Delay: &FaultDelay{Fixed: time.Second, Percent: 10}, Abort: &FaultAbort{GRPC: true, GRPCStatus: 14, Percent: 5}}},
		{Name: "demo.faults.3.0", Match: RouteMatch{PathType: PathPrefix, Path: "/missing"}, DirectStatus: 500},
	}
	return in
}

func TestFaultRoutesRefused(t *testing.T) {
	web := Backend{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}
	for _, tc := range []struct {
		name  string
		fault Fault
		want  string
	}{
		{"empty", Fault{}, "neither a delay nor an abort"},
		{"negative delay", Fault{Delay: &FaultDelay{Fixed: -time.Second, Percent: 100}}, "not more than 0s"},
		{"zero delay", Fault{Delay: &FaultDelay{Percent: 100}}, "not more than 0s"},
		{"delay too long", Fault{Delay: &FaultDelay{Fixed: 2 * time.Hour, Percent: 100}}, "not more than 0s"},
		{"delay percent", Fault{Delay: &FaultDelay{Fixed: time.Second, Percent: 101}}, "above 100"},
		{"abort percent", Fault{Abort: &FaultAbort{HTTPStatus: 503, Percent: 200}}, "above 100"},
		{"http status", Fault{Abort: &FaultAbort{HTTPStatus: 600, Percent: 1}}, "between 200 and 599"},
		{"no status", Fault{Abort: &FaultAbort{Percent: 1}}, "between 200 and 599"},
		{"grpc status", Fault{Abort: &FaultAbort{GRPC: true, GRPCStatus: 17, Percent: 1}}, "between 0 and 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := exampleInput()
			in.Services[0].Ports[0].Routes = []Route{{Name: "demo.r.0.0", Backends: []Backend{web}, Fault: &tc.fault}}
			_, err := Build(in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
