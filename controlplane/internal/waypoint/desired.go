package waypoint

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/ca"
	"ambit.dev/controlplane/internal/model"
)

// This file holds the controller's decisions, as pure functions of the
// objects: whether a Gateway is a valid waypoint (Validate), the objects
// that deploy it (Desired), and its status (Status, NextStatus).

// Labels the controller puts on every object it creates for a Gateway
// (and on the waypoint's pods), as Gateway API implementations do.
const (
	LabelGatewayName      = model.LabelGatewayName
	LabelGatewayClassName = "gateway.networking.k8s.io/gateway-class-name"
)

// Ports of a waypoint pod.
const (
	PortHBONE   = model.WaypointHBONEPort
	PortMetrics = 15020
	PortStatus  = 15021
	// ReadinessPath is served on PortStatus.
	ReadinessPath = "/healthz/ready"
	// ServiceAppProtocol is the appProtocol of the waypoint Service's
	// HBONE port.
	ServiceAppProtocol = "ambit.dev/hbone"
	// TokenAudience is the audience of the ServiceAccount token mounted
	// at TokenPath: the control plane's CA reviews tokens for it.
	TokenAudience = "ambit-ca"
	// TokenPath is the projected ServiceAccount token in a waypoint pod.
	TokenPath = "/var/run/ambit/token/token"
	// RootCertConfigMap is the ConfigMap of mesh roots the controller
	// copies into the Gateway's namespace from the control plane's (the
	// CA's ca.RootConfigMapName), under RootCertKey; the waypoint pod
	// mounts it at RootCertDir.
	RootCertConfigMap = ca.RootConfigMapName
	RootCertKey       = ca.KeyRootCert
	RootCertDir       = "/var/run/ambit/root"
	// RootCertPath is the mesh roots file in a waypoint pod.
	RootCertPath = RootCertDir + "/" + RootCertKey
	// DefaultXDSPort and DefaultCAPort are the control plane Service's
	// xDS and CA ports.
	DefaultXDSPort = "15012"
	DefaultCAPort  = "15017"
)

// Environment of the waypoint container: what the ambit-waypoint binary
// (waypoint/internal/config: AMBIT_ followed by the flag name) reads to
// find itself, its Gateway and the control plane.
const (
	EnvPodName          = "AMBIT_POD_NAME"
	EnvPodNamespace     = "AMBIT_POD_NAMESPACE"
	EnvPodIPs           = "AMBIT_POD_IPS"
	EnvServiceAccount   = "AMBIT_SERVICE_ACCOUNT"
	EnvGateway          = "AMBIT_GATEWAY"
	EnvTrustDomain      = "AMBIT_TRUST_DOMAIN"
	EnvClusterDomain    = "AMBIT_CLUSTER_DOMAIN"
	EnvXDSAddress       = "AMBIT_XDS_ADDRESS"
	EnvCAAddress        = "AMBIT_CA_ADDRESS"
	EnvControlPlaneName = "AMBIT_CONTROL_PLANE_NAME"
	EnvRootCertFile     = "AMBIT_ROOT_CERT_FILE"
	EnvTokenFile        = "AMBIT_TOKEN_FILE"
)

// ControlPlane is where waypoint pods reach the control plane, as the
// controller resolved it (see ResolveControlPlane).
type ControlPlane struct {
	// XDSAddress and CAAddress are host:port.
	XDSAddress, CAAddress string
}

// ResolveControlPlane returns the control plane addresses for waypoint
// pods: cfg.XDSAddress and cfg.CAAddress, where a host that is the
// control plane's DNS name (cfg.ControlPlaneName, with or without the
// cluster domain) is replaced by clusterIP when it is set. Waypoint pods
// run in application namespaces, where Kubernetes injects no
// AMBIT_CONTROLPLANE_SERVICE_HOST, and a cluster may have no DNS; the DNS
// name stays the TLS server name (AMBIT_CONTROL_PLANE_NAME).
func ResolveControlPlane(cfg Config, clusterIP string) ControlPlane {
	resolve := func(addr string) string {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || clusterIP == "" || clusterIP == corev1.ClusterIPNone {
			return addr
		}
		name := strings.TrimSuffix(cfg.ControlPlaneName, ".")
		if host == name || host == name+"."+cfg.ClusterDomain {
			return net.JoinHostPort(clusterIP, port)
		}
		return addr
	}
	return ControlPlane{XDSAddress: resolve(cfg.XDSAddress), CAAddress: resolve(cfg.CAAddress)}
}

// Verdict says whether a Gateway is accepted as a waypoint, and why not.
type Verdict struct {
	Accepted bool
	// Reason is a Gateway API reason of the Accepted condition.
	Reason gwapiv1.GatewayConditionReason
	// Message says what to change.
	Message string
}

// Validate checks a Gateway of class model.WaypointClass: exactly one
// listener, named mesh, on port 15008 with protocol HBONE; no requested
// addresses; a valid ambit.dev/waypoint-for label; and a name that can name
// its Service.
func Validate(gw *gwapiv1.Gateway) Verdict {
	want := fmt.Sprintf("a waypoint has exactly one listener {name: %s, port: %d, protocol: %s}",
		model.WaypointListenerName, model.WaypointListenerPort, model.WaypointListenerProtocol)
	ls := gw.Spec.Listeners
	if len(ls) != 1 {
		return Verdict{Reason: gwapiv1.GatewayReasonListenersNotValid, Message: fmt.Sprintf("%d listeners: %s", len(ls), want)}
	}
	l := ls[0]
	var bad []string
	if l.Name != model.WaypointListenerName {
		bad = append(bad, fmt.Sprintf("name %q", l.Name))
	}
	if l.Port != model.WaypointListenerPort {
		bad = append(bad, fmt.Sprintf("port %d", l.Port))
	}
	if l.Protocol != model.WaypointListenerProtocol {
		bad = append(bad, fmt.Sprintf("protocol %q", l.Protocol))
	}
	if l.TLS != nil {
		bad = append(bad, "tls set (HBONE carries its own mutual TLS)")
	}
	if len(bad) > 0 {
		return Verdict{Reason: gwapiv1.GatewayReasonListenersNotValid, Message: fmt.Sprintf("listener has %s: %s", strings.Join(bad, ", "), want)}
	}
	if len(gw.Spec.Addresses) > 0 {
		return Verdict{Reason: gwapiv1.GatewayReasonUnsupportedAddress, Message: "spec.addresses is not supported: a waypoint's address is the ClusterIP of its Service"}
	}
	if _, err := model.ParseWaypointFor(gw.Labels); err != nil {
		return Verdict{Reason: gwapiv1.GatewayReasonInvalidParameters, Message: err.Error()}
	}
	if errs := validation.IsDNS1035Label(gw.Name); len(errs) > 0 {
		return Verdict{Reason: gwapiv1.GatewayReasonInvalid, Message: fmt.Sprintf("the name %q cannot name the waypoint's Service: %s", gw.Name, strings.Join(errs, "; "))}
	}
	return Verdict{Accepted: true, Reason: gwapiv1.GatewayReasonAccepted, Message: "waypoint accepted"}
}

// Objects are what deploys one waypoint, as server-side apply
// configurations: all named after the Gateway and controlled by it (so
// deleting the Gateway deletes them).
type Objects struct {
	ServiceAccount *corev1ac.ServiceAccountApplyConfiguration
	Service        *corev1ac.ServiceApplyConfiguration
	Deployment     *appsv1ac.DeploymentApplyConfiguration
}

// Desired returns the objects that deploy the waypoint gw (which Validate
// accepted).
//
// The waypoint's pods carry ambit.dev/dataplane-mode=none: the node agent
// does not redirect them into ztunnel, because the waypoint terminates and
// originates HBONE itself on :15008 (ztunnel's in-pod listeners would take
// that port). The control plane still publishes them as HBONE workloads
// (model.WaypointWorkload). spec.infrastructure labels and annotations of
// the Gateway are copied onto every object and the pods. The waypoint
// container's environment is the ambit-waypoint binary's configuration:
// the pod (downward API), its Gateway "<namespace>/<name>", the control
// plane at cp (TLS server name cfg.ControlPlaneName), the mesh roots from
// the ConfigMap RootCertConfigMap of the Gateway's namespace (see
// RootCertConfigMapFor) and the token for the CA.
func Desired(gw *gwapiv1.Gateway, cfg Config, cp ControlPlane) Objects {
	name, ns := gw.Name, gw.Namespace
	owner := metav1ac.OwnerReference().
		WithAPIVersion(gwapiv1.GroupVersion.String()).WithKind("Gateway").
		WithName(name).WithUID(gw.UID).WithController(true)
	labels, annotations := infrastructure(gw)
	labels[LabelGatewayName] = name
	labels[LabelGatewayClassName] = model.WaypointClass
	selector := map[string]string{LabelGatewayName: name}
	podLabels := maps.Clone(labels)
	podLabels[model.LabelDataplaneMode] = model.DataplaneModeNone

	sa := corev1ac.ServiceAccount(name, ns).
		WithLabels(labels).WithAnnotations(annotations).WithOwnerReferences(owner)

	svc := corev1ac.Service(name, ns).
		WithLabels(labels).WithAnnotations(annotations).WithOwnerReferences(owner).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(selector).
			WithPorts(corev1ac.ServicePort().
				WithName(model.WaypointListenerName).WithProtocol(corev1.ProtocolTCP).
				WithAppProtocol(ServiceAppProtocol).
				WithPort(PortHBONE).WithTargetPort(intstr.FromInt32(PortHBONE))))

	fieldEnv := func(name, path string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath(path)))
	}
	valueEnv := func(name, value string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValue(value)
	}
	container := corev1ac.Container().
		WithName("waypoint").
		WithImage(cfg.Image).WithImagePullPolicy(cfg.PullPolicy).
		WithPorts(
			corev1ac.ContainerPort().WithName(model.WaypointListenerName).WithContainerPort(PortHBONE).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("http-metrics").WithContainerPort(PortMetrics).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("http-status").WithContainerPort(PortStatus).WithProtocol(corev1.ProtocolTCP),
		).
		WithEnv(
			fieldEnv(EnvPodName, "metadata.name"),
			fieldEnv(EnvPodNamespace, "metadata.namespace"),
			fieldEnv(EnvPodIPs, "status.podIPs"),
			fieldEnv(EnvServiceAccount, "spec.serviceAccountName"),
			valueEnv(EnvGateway, ns+"/"+name),
			valueEnv(EnvTrustDomain, cfg.TrustDomain),
			valueEnv(EnvClusterDomain, cfg.ClusterDomain),
			valueEnv(EnvXDSAddress, cp.XDSAddress),
			valueEnv(EnvCAAddress, cp.CAAddress),
			valueEnv(EnvControlPlaneName, cfg.ControlPlaneName),
			valueEnv(EnvRootCertFile, RootCertPath),
			valueEnv(EnvTokenFile, TokenPath),
		).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(ReadinessPath).WithPort(intstr.FromInt32(PortStatus))).
			WithPeriodSeconds(2)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("ambit-token").WithMountPath("/var/run/ambit/token").WithReadOnly(true),
			corev1ac.VolumeMount().WithName("ambit-root-cert").WithMountPath(RootCertDir).WithReadOnly(true)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")))

	token := corev1ac.Volume().WithName("ambit-token").
		WithProjected(corev1ac.ProjectedVolumeSource().WithSources(
			corev1ac.VolumeProjection().WithServiceAccountToken(corev1ac.ServiceAccountTokenProjection().
				WithAudience(TokenAudience).WithExpirationSeconds(3600).WithPath("token"))))
	roots := corev1ac.Volume().WithName("ambit-root-cert").
		WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(RootCertConfigMap))
	podSpec := corev1ac.PodSpec().
		WithServiceAccountName(name).
		WithAutomountServiceAccountToken(false).
		WithTerminationGracePeriodSeconds(30).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).WithRunAsUser(65532).WithRunAsGroup(65532)).
		WithContainers(container).
		WithVolumes(token, roots)
	dep := appsv1ac.Deployment(name, ns).
		WithLabels(labels).WithAnnotations(annotations).WithOwnerReferences(owner).
		WithSpec(appsv1ac.DeploymentSpec().
			// No replicas: the Deployment starts with 1, and scaling it
			// (by hand or by an autoscaler) is not undone.
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podLabels).WithAnnotations(annotations).
				WithSpec(podSpec)))
	return Objects{ServiceAccount: sa, Service: svc, Deployment: dep}
}

// RootCertConfigMapFor returns the ConfigMap RootCertConfigMap of gw's
// namespace holding rootPEM (the control plane's mesh roots) under
// RootCertKey. Every waypoint Gateway of the namespace applies it with its
// own field manager (ConfigMapFieldManager) and owner reference (not a
// controller one: several Gateways share it), so it goes with the last of
// them.
func RootCertConfigMapFor(gw *gwapiv1.Gateway, rootPEM string) *corev1ac.ConfigMapApplyConfiguration {
	owner := metav1ac.OwnerReference().
		WithAPIVersion(gwapiv1.GroupVersion.String()).WithKind("Gateway").
		WithName(gw.Name).WithUID(gw.UID)
	return corev1ac.ConfigMap(RootCertConfigMap, gw.Namespace).
		WithLabels(map[string]string{LabelGatewayClassName: model.WaypointClass, "app.kubernetes.io/part-of": "ambit"}).
		WithOwnerReferences(owner).
		WithData(map[string]string{RootCertKey: rootPEM})
}

// ConfigMapFieldManager is the field manager of gw's apply of the shared
// RootCertConfigMap.
func ConfigMapFieldManager(gw *gwapiv1.Gateway) string {
	return FieldManager + "/" + gw.Name
}

// infrastructure returns copies of the Gateway's spec.infrastructure labels
// and annotations (never nil).
func infrastructure(gw *gwapiv1.Gateway) (map[string]string, map[string]string) {
	labels, annotations := map[string]string{}, map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			labels[string(k)] = string(v)
		}
		for k, v := range inf.Annotations {
			annotations[string(k)] = string(v)
		}
	}
	return labels, annotations
}

// Hostname is the DNS name of the waypoint gw's Service.
func Hostname(gw *gwapiv1.Gateway, clusterDomain string) string {
	return model.Hostname(gw.Name, gw.Namespace, clusterDomain)
}

// Status returns the status gw should have: Accepted from v; Programmed
// once the Deployment dep has an available replica and the Service svc a
// ClusterIP; status.addresses the Service's ClusterIPs and hostname. dep
// and svc are nil when they do not exist (yet). Condition times are left
// zero: NextStatus sets them.
func Status(gw *gwapiv1.Gateway, v Verdict, svc *corev1.Service, dep *appsv1.Deployment, clusterDomain string) gwapiv1.GatewayStatus {
	cond := func(t gwapiv1.GatewayConditionType, ok bool, reason gwapiv1.GatewayConditionReason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: string(t), Status: s, Reason: string(reason), Message: msg, ObservedGeneration: gw.Generation}
	}
	accepted := cond(gwapiv1.GatewayConditionAccepted, v.Accepted, v.Reason, v.Message)
	if !v.Accepted {
		return gwapiv1.GatewayStatus{Conditions: []metav1.Condition{accepted,
			cond(gwapiv1.GatewayConditionProgrammed, false, gwapiv1.GatewayReasonInvalid, "not deployed: the Gateway is not accepted")}}
	}
	var st gwapiv1.GatewayStatus
	var ips []string
	if svc != nil {
		ips = svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		ips = slices.DeleteFunc(slices.Clone(ips), func(ip string) bool { return ip == corev1.ClusterIPNone })
	}
	for _, ip := range ips {
		st.Addresses = append(st.Addresses, gwapiv1.GatewayStatusAddress{Type: new(gwapiv1.IPAddressType), Value: ip})
	}
	if svc != nil {
		st.Addresses = append(st.Addresses, gwapiv1.GatewayStatusAddress{Type: new(gwapiv1.HostnameAddressType), Value: Hostname(gw, clusterDomain)})
	}
	var programmed metav1.Condition
	switch {
	case dep == nil || svc == nil:
		programmed = cond(gwapiv1.GatewayConditionProgrammed, false, gwapiv1.GatewayReasonPending,
			fmt.Sprintf("waiting for the Deployment and Service %s/%s to be created", gw.Namespace, gw.Name))
	case len(ips) == 0:
		programmed = cond(gwapiv1.GatewayConditionProgrammed, false, gwapiv1.GatewayReasonAddressNotAssigned,
			fmt.Sprintf("the Service %s/%s has no ClusterIP yet", gw.Namespace, gw.Name))
	case dep.Status.AvailableReplicas < 1:
		programmed = cond(gwapiv1.GatewayConditionProgrammed, false, gwapiv1.GatewayReasonPending,
			fmt.Sprintf("the Deployment %s/%s has no available replica yet (check its pods: image pull, readiness on :%d%s)", gw.Namespace, gw.Name, PortStatus, ReadinessPath))
	default:
		programmed = cond(gwapiv1.GatewayConditionProgrammed, true, gwapiv1.GatewayReasonProgrammed,
			fmt.Sprintf("%d available replica(s)", dep.Status.AvailableReplicas))
	}
	st.Conditions = []metav1.Condition{accepted, programmed}
	if _, set := gw.Annotations[model.AnnotationAccessLogSampling]; set {
		pct, problem := model.AccessLogSampling(gw.Annotations)
		if problem != "" {
			st.Conditions = append(st.Conditions, cond(ConditionAccessLogSampling, false, ReasonInvalidSampling, problem))
		} else {
			st.Conditions = append(st.Conditions, cond(ConditionAccessLogSampling, true, ReasonSamplingApplied,
				fmt.Sprintf("the access log records %d%% of requests and every response >= 400", pct)))
		}
	}
	return st
}

// The condition a waypoint Gateway with the ambit.dev/access-log-sampling
// annotation gets (XDS.md §13).
const (
	ConditionAccessLogSampling gwapiv1.GatewayConditionType   = "ambit.dev/AccessLogSampling"
	ReasonSamplingApplied      gwapiv1.GatewayConditionReason = "Applied"
	ReasonInvalidSampling      gwapiv1.GatewayConditionReason = "InvalidValue"
)

// NextStatus returns cur with the conditions and addresses of want (other
// conditions kept; a condition's transition time kept while its status
// does not flip, else now), and whether that differs from cur.
func NextStatus(cur, want gwapiv1.GatewayStatus, now metav1.Time) (gwapiv1.GatewayStatus, bool) {
	next := *cur.DeepCopy()
	changed := false
	for _, w := range want.Conditions {
		old := apimeta.FindStatusCondition(cur.Conditions, w.Type)
		if old != nil && old.Status == w.Status && old.Reason == w.Reason && old.Message == w.Message && old.ObservedGeneration == w.ObservedGeneration {
			continue
		}
		changed = true
		w.LastTransitionTime = now
		apimeta.SetStatusCondition(&next.Conditions, w)
	}
	if !addressesEqual(cur.Addresses, want.Addresses) {
		changed = true
		next.Addresses = slices.Clone(want.Addresses)
	}
	return next, changed
}

func addressesEqual(a, b []gwapiv1.GatewayStatusAddress) bool {
	return slices.EqualFunc(a, b, func(x, y gwapiv1.GatewayStatusAddress) bool {
		return x.Value == y.Value && (x.Type == nil) == (y.Type == nil) && (x.Type == nil || *x.Type == *y.Type)
	})
}

// ClassStatus returns the status of the GatewayClass model.WaypointClass:
// Accepted, since this controller serves it.
func ClassStatus(generation int64) metav1.Condition {
	return metav1.Condition{
		Type:               string(gwapiv1.GatewayClassConditionStatusAccepted),
		Status:             metav1.ConditionTrue,
		Reason:             string(gwapiv1.GatewayClassReasonAccepted),
		Message:            "handled by the Ambit waypoint controller",
		ObservedGeneration: generation,
	}
}
