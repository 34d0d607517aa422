// Package charts holds Ambit's Helm chart (the directory ambit/, embedded)
// and renders it with Helm's own Go packages, so that a program or a test
// gets exactly the objects `helm template` would produce, without the helm
// CLI and without a cluster.
package charts

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"strings"
	"sync"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultNamespace is the namespace Ambit is installed in unless told
// otherwise.
const DefaultNamespace = "ambit-system"

// ReleaseName is the Helm release name Render renders for ({{ .Release.Name }}).
// Object names do not depend on it.
const ReleaseName = "ambit"

// chartDir is the chart's directory in chartFiles. "all:" keeps the files
// whose names start with "_" (templates/_helpers.tpl).
const chartDir = "ambit"

//go:embed all:ambit
var chartFiles embed.FS

// applyOrder is the order of kinds in Render's output: what an object needs
// exists before it (CRDs and the namespace first; the Service
// ambit-controlplane before the ztunnel pods, which find the control plane
// through the AMBIT_CONTROLPLANE_SERVICE_HOST variable Kubernetes injects
// from it). Kinds not listed come last. Helm's own install order
// (releaseutil.InstallOrder) differs only in where it puts CRDs and
// DaemonSets; the objects are the same.
var applyOrder = releaseutil.KindSortOrder{
	"CustomResourceDefinition",
	"Namespace",
	"ServiceAccount",
	"ClusterRole",
	"ClusterRoleBinding",
	"Role",
	"RoleBinding",
	"ConfigMap",
	"Secret",
	"Service",
	"Deployment",
	"DaemonSet",
}

var loadChart = sync.OnceValues(func() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFiles, chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFiles.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, chartDir+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("charts: reading the embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("charts: loading the embedded chart %s: %w", chartDir, err)
	}
	return c, nil
})

// Render renders the chart for a release in namespace with values merged
// over the chart's defaults (validated against values.schema.json),
// returning one multi-document YAML stream in apply order:
// CRDs, Namespace, ServiceAccounts, RBAC, ConfigMaps/Secrets, Services,
// Deployments, DaemonSets.
//
// An empty namespace means DefaultNamespace. The output is meant for
// `kubectl apply`, where nothing else creates the namespace, so unless
// values set namespace.create, Render sets it to true (with `helm install`
// it defaults to false, for --create-namespace). values is not modified.
//
// Each document is "---", a "# Source: <template>" line and the object, as
// `helm template` prints it.
func Render(namespace string, values map[string]any) ([]byte, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("charts: namespace %q is not a valid namespace name: %s", namespace, strings.Join(errs, "; "))
	}
	c, err := loadChart()
	if err != nil {
		return nil, err
	}
	top, err := chartutil.ToRenderValues(c, withNamespaceCreate(values), chartutil.ReleaseOptions{
		Name:      ReleaseName,
		Namespace: namespace,
		Revision:  1,
		IsInstall: true,
	}, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, fmt.Errorf("charts: invalid values for chart %s (see deploy/charts/ambit/values.yaml): %w", c.Name(), err)
	}
	files, err := engine.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("charts: rendering chart %s: %w", c.Name(), err)
	}
	// NOTES.txt is the message `helm install` prints, not an object.
	for name := range files {
		if path.Base(name) == "NOTES.txt" {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, applyOrder)
	if err != nil {
		return nil, fmt.Errorf("charts: splitting the rendered chart into objects: %w", err)
	}
	if len(hooks) > 0 {
		return nil, errors.New("charts: the chart has Helm hooks, which Render cannot order; render it with helm instead")
	}
	var b bytes.Buffer
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	return b.Bytes(), nil
}

// withNamespaceCreate is values with namespace.create defaulting to true,
// copying only the maps it changes.
func withNamespaceCreate(values map[string]any) map[string]any {
	out := maps.Clone(values)
	if out == nil {
		out = map[string]any{}
	}
	switch ns := out["namespace"].(type) {
	case nil:
		out["namespace"] = map[string]any{"create": true}
	case map[string]any:
		if _, set := ns["create"]; !set {
			ns = maps.Clone(ns)
			ns["create"] = true
			out["namespace"] = ns
		}
	}
	// Any other type is left for the schema to reject.
	return out
}
