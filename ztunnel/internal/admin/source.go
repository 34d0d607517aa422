package admin

import "ambit.dev/ztunnel/pkg/adminapi"

// Source is what the admin server shows; the ztunnel app implements it.
type Source interface {
	// ConfigDump returns a fresh snapshot; it is called once per request.
	ConfigDump() adminapi.ConfigDump
	// Ready returns nil once ztunnel can proxy, else why not.
	Ready() error
}
