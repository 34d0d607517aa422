package workloadv1alpha1

import "strings"

// Type URLs of the two resource types, as used in DeltaDiscoveryRequest.type_url
// and in the google.protobuf.Any that wraps each resource.
const (
	// AddressTypeURL is the type URL of Address resources.
	AddressTypeURL = "type.googleapis.com/ambit.workload.v1alpha1.Address"
	// AuthorizationTypeURL is the type URL of Authorization resources.
	AuthorizationTypeURL = "type.googleapis.com/ambit.workload.v1alpha1.Authorization"
)

// PeerAuthenticationNamePrefix starts the name of every Authorization derived
// from a PeerAuthentication. ':' cannot occur in a Kubernetes name, so such a
// name never collides with one derived from an AuthorizationPolicy.
const PeerAuthenticationNamePrefix = "peerauthentication:"

// ServiceResourceName returns the xDS resource name of a Service, and the key
// of Workload.services: "<namespace>/<hostname>".
func ServiceResourceName(namespace, hostname string) string {
	return namespace + "/" + hostname
}

// AuthorizationResourceName returns the xDS resource name of an Authorization,
// as listed in Workload.authorization_policies: "<namespace>/<name>".
func AuthorizationResourceName(namespace, name string) string {
	return namespace + "/" + name
}

// PeerAuthenticationName returns the Authorization name used for the
// PeerAuthentication called name.
func PeerAuthenticationName(name string) string {
	return PeerAuthenticationNamePrefix + name
}

// IsPeerAuthenticationName reports whether an Authorization name was made by
// PeerAuthenticationName.
func IsPeerAuthenticationName(name string) bool {
	return strings.HasPrefix(name, PeerAuthenticationNamePrefix)
}

// ResourceName returns the xDS resource name of the Address: the workload's
// uid, or "<namespace>/<hostname>" for a service. It returns "" for an
// Address with neither set (an invalid resource).
func (x *Address) ResourceName() string {
	switch t := x.GetType().(type) {
	case *Address_Workload:
		return t.Workload.GetUid()
	case *Address_Service:
		return ServiceResourceName(t.Service.GetNamespace(), t.Service.GetHostname())
	default:
		return ""
	}
}

// ResourceName returns the xDS resource name of the Authorization:
// "<namespace>/<name>".
func (x *Authorization) ResourceName() string {
	return AuthorizationResourceName(x.GetNamespace(), x.GetName())
}
