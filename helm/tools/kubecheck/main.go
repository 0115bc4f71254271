// kubecheck reads rendered Kubernetes manifests (multi-document YAML, e.g. `helm template` output) from stdin
// and decodes every document strictly into its Kubernetes Go type, chosen by apiVersion and kind. Strict means
// what the API server's strict field validation means: an unknown field, a duplicated field or a value of the
// wrong type is an error. On top of that it checks what decoding cannot see but the API server rejects: object
// names and label syntax, container and port names, and that a Deployment's selector matches its pod template.
//
//	helm template ... | kubecheck [-name LABEL] [-min-documents N]
//	helm template ... | kubecheck -extract KEY     (also prints data[KEY] of the ConfigMap holding it)
//	helm template ... | kubecheck -extract-rules   (also prints the PrometheusRule's spec, a Prometheus rule file)
//
// Exit status 0 when every document is valid, 1 otherwise; each problem is printed as
// "SOURCE: KIND/NAME: error", where SOURCE is the chart file from helm's "# Source:" comment.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, rbacv1.AddToScheme, autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

type document struct {
	source string // the chart file, from helm's "# Source: chart/templates/x.yaml"
	index  int    // 1-based position in the stream
	body   []byte
}

var (
	separator  = regexp.MustCompile(`^---\s*$`)
	sourceLine = regexp.MustCompile(`^#\s*Source:\s*(\S+)`)
)

// split cuts a YAML stream at "---" lines, keeping each document's "# Source:" comment.
func split(r io.Reader, fallback string) ([]document, error) {
	var docs []document
	cur := document{source: fallback}
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.body))) > 0 {
			cur.index = len(docs) + 1
			docs = append(docs, cur)
		}
		cur = document{source: fallback}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if separator.MatchString(line) {
			flush()
			continue
		}
		if m := sourceLine.FindStringSubmatch(line); m != nil {
			cur.source = m[1]
		}
		cur.body = append(cur.body, line...)
		cur.body = append(cur.body, '\n')
	}
	flush()
	return docs, sc.Err()
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

type checker struct {
	scheme       *runtime.Scheme
	problems     []string
	extractKey   string
	extractRules bool
	extracted    []string
}

func (c *checker) fail(doc document, kind, name, format string, args ...any) {
	if kind == "" {
		kind = "<no kind>"
	}
	if name == "" {
		name = "<no name>"
	}
	c.problems = append(c.problems, fmt.Sprintf("%s (document %d): %s/%s: %s", doc.source, doc.index, kind, name,
		fmt.Sprintf(format, args...)))
}

func (c *checker) check(doc document) {
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc.body, &head); err != nil {
		c.fail(doc, "", "", "not valid YAML: %v", err)
		return
	}
	kind, name := head.Kind, head.Metadata.Name
	if head.APIVersion == "" || kind == "" {
		c.fail(doc, kind, name, "apiVersion and kind are required")
		return
	}
	gv, err := schema.ParseGroupVersion(head.APIVersion)
	if err != nil {
		c.fail(doc, kind, name, "apiVersion %q: %v", head.APIVersion, err)
		return
	}
	obj, err := c.scheme.New(gv.WithKind(kind))
	if err != nil {
		c.fail(doc, kind, name, "unknown apiVersion/kind %s %s (not a type this checker knows)", head.APIVersion, kind)
		return
	}
	// UnmarshalStrict converts YAML to JSON and decodes with unknown fields disallowed; duplicate keys are
	// rejected by the YAML step; a string where an integer belongs (or the reverse) is a type error.
	if err := yaml.UnmarshalStrict(doc.body, obj); err != nil {
		c.fail(doc, kind, name, "strict decoding into %T: %v", obj, err)
		return
	}
	if rule, ok := obj.(*monitoringv1.PrometheusRule); ok && c.extractRules {
		out, err := yaml.Marshal(rule.Spec)
		if err != nil {
			c.fail(doc, kind, name, "re-encoding spec: %v", err)
		}
		c.extracted = append(c.extracted, string(out))
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok && c.extractKey != "" {
		if value, found := cm.Data[c.extractKey]; found {
			c.extracted = append(c.extracted, value)
		}
	}
	for _, problem := range validate(obj) {
		c.fail(doc, kind, name, "%s", problem)
	}
}

func validate(obj runtime.Object) []string {
	var p []string
	accessor, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	if accessor.GetName() == "" {
		p = append(p, "metadata.name is required")
	} else {
		for _, e := range validation.IsDNS1123Subdomain(accessor.GetName()) {
			p = append(p, "metadata.name: "+e)
		}
	}
	p = append(p, checkLabels("metadata.labels", accessor.GetLabels())...)
	switch o := obj.(type) {
	case *corev1.Service:
		for _, e := range validation.IsDNS1035Label(o.Name) {
			p = append(p, "metadata.name (a Service name is a DNS-1035 label): "+e)
		}
		for i, port := range o.Spec.Ports {
			if port.Port < 1 || port.Port > 65535 {
				p = append(p, fmt.Sprintf("spec.ports[%d].port %d is not a port number", i, port.Port))
			}
			if len(o.Spec.Ports) > 1 && port.Name == "" {
				p = append(p, fmt.Sprintf("spec.ports[%d].name is required when a Service has several ports", i))
			}
		}
	case *corev1.ConfigMap:
		for key := range o.Data {
			for _, e := range validation.IsConfigMapKey(key) {
				p = append(p, fmt.Sprintf("data key %q: %s", key, e))
			}
		}
	case *corev1.Pod:
		p = append(p, checkPodSpec("spec", &o.Spec)...)
	case *appsv1.Deployment:
		p = append(p, checkSelector("spec", o.Spec.Selector, o.Spec.Template.Labels)...)
		p = append(p, checkLabels("spec.template.metadata.labels", o.Spec.Template.Labels)...)
		p = append(p, checkPodSpec("spec.template.spec", &o.Spec.Template.Spec)...)
	case *appsv1.StatefulSet:
		p = append(p, checkSelector("spec", o.Spec.Selector, o.Spec.Template.Labels)...)
		p = append(p, checkPodSpec("spec.template.spec", &o.Spec.Template.Spec)...)
	case *policyv1.PodDisruptionBudget:
		if o.Spec.Selector == nil {
			p = append(p, "spec.selector is required")
		}
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			p = append(p, "exactly one of spec.minAvailable and spec.maxUnavailable must be set")
		}
	case *monitoringv1.PrometheusRule:
		for _, g := range o.Spec.Groups {
			for j, r := range g.Rules {
				if (r.Alert == "") == (r.Record == "") {
					p = append(p, fmt.Sprintf("group %q rule %d: exactly one of alert and record must be set", g.Name, j))
				}
				if r.Expr.String() == "" {
					p = append(p, fmt.Sprintf("group %q rule %d: expr is required", g.Name, j))
				}
			}
		}
	}
	return p
}

func checkLabels(path string, l map[string]string) []string {
	var p []string
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			p = append(p, fmt.Sprintf("%s key %q: %s", path, k, e))
		}
		for _, e := range validation.IsValidLabelValue(v) {
			p = append(p, fmt.Sprintf("%s[%q] value %q: %s", path, k, v, e))
		}
	}
	return p
}

func checkSelector(path string, sel *metav1.LabelSelector, podLabels map[string]string) []string {
	if sel == nil {
		return []string{path + ".selector is required"}
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return []string{fmt.Sprintf("%s.selector: %v", path, err)}
	}
	if s.Empty() {
		return []string{path + ".selector must not be empty"}
	}
	if !s.Matches(labels.Set(podLabels)) {
		return []string{fmt.Sprintf("%s.selector %s does not match the pod template's labels %v", path, s, podLabels)}
	}
	return nil
}

func checkPodSpec(path string, spec *corev1.PodSpec) []string {
	var p []string
	if len(spec.Containers) == 0 {
		p = append(p, path+".containers must not be empty")
	}
	volumes := map[string]bool{}
	for i, v := range spec.Volumes {
		if volumes[v.Name] {
			p = append(p, fmt.Sprintf("%s.volumes[%d]: duplicate name %q", path, i, v.Name))
		}
		volumes[v.Name] = true
		for _, e := range validation.IsDNS1123Label(v.Name) {
			p = append(p, fmt.Sprintf("%s.volumes[%d].name %q: %s", path, i, v.Name, e))
		}
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for i, c := range all {
		cp := fmt.Sprintf("%s.containers[%s]", path, c.Name)
		if c.Name == "" {
			cp = fmt.Sprintf("%s.containers[#%d]", path, i)
			p = append(p, cp+".name is required")
		}
		if names[c.Name] {
			p = append(p, cp+": duplicate container name")
		}
		names[c.Name] = true
		for _, e := range validation.IsDNS1123Label(c.Name) {
			p = append(p, fmt.Sprintf("%s.name: %s", cp, e))
		}
		if strings.TrimSpace(c.Image) == "" {
			p = append(p, cp+".image is required")
		}
		ports := map[string]bool{}
		for _, port := range c.Ports {
			if port.Name != "" {
				for _, e := range validation.IsValidPortName(port.Name) {
					p = append(p, fmt.Sprintf("%s.ports[%s]: %s", cp, port.Name, e))
				}
				ports[port.Name] = true
			}
			if port.ContainerPort < 1 || port.ContainerPort > 65535 {
				p = append(p, fmt.Sprintf("%s.ports: containerPort %d is not a port number", cp, port.ContainerPort))
			}
		}
		for _, probe := range []struct {
			name string
			p    *corev1.Probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
			if probe.p == nil || probe.p.HTTPGet == nil {
				continue
			}
			if port := probe.p.HTTPGet.Port; port.StrVal != "" && !ports[port.StrVal] {
				p = append(p, fmt.Sprintf("%s.%s: port %q is not a named port of the container", cp, probe.name, port.StrVal))
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				p = append(p, fmt.Sprintf("%s.volumeMounts: %q is not a volume of the pod", cp, m.Name))
			}
		}
		for _, e := range c.Env {
			if len(validation.IsEnvVarName(e.Name)) > 0 {
				p = append(p, fmt.Sprintf("%s.env: %q is not a valid variable name", cp, e.Name))
			}
		}
	}
	return p
}

func main() {
	name := flag.String("name", "<stdin>", "what to call the input in messages when a document has no # Source: comment")
	minDocs := flag.Int("min-documents", 1, "fail when the input holds fewer documents than this")
	extract := flag.String("extract", "", "print data[KEY] of the one ConfigMap that has it to stdout (after validating)")
	extractRules := flag.Bool("extract-rules", false, "print the spec of the one PrometheusRule to stdout (after validating)")
	flag.Parse()
	docs, err := split(os.Stdin, *name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubecheck: reading %s: %v\n", *name, err)
		os.Exit(1)
	}
	c := &checker{scheme: newScheme(), extractKey: *extract, extractRules: *extractRules}
	for _, doc := range docs {
		c.check(doc)
	}
	if len(docs) < *minDocs {
		c.problems = append(c.problems, fmt.Sprintf("%s: %d documents, expected at least %d", *name, len(docs), *minDocs))
	}
	extracting := *extract != "" || *extractRules
	if *extract != "" && *extractRules {
		fmt.Fprintln(os.Stderr, "kubecheck: give -extract or -extract-rules, not both")
		os.Exit(2)
	}
	if extracting && len(c.extracted) != 1 {
		what := fmt.Sprintf("ConfigMaps have data key %q", *extract)
		if *extractRules {
			what = "PrometheusRules"
		}
		c.problems = append(c.problems, fmt.Sprintf("%s: %d %s, expected exactly one", *name, len(c.extracted), what))
	}
	for _, problem := range c.problems {
		fmt.Fprintln(os.Stderr, "kubecheck: "+problem)
	}
	if len(c.problems) > 0 {
		os.Exit(1)
	}
	if extracting {
		fmt.Print(c.extracted[0])
		fmt.Fprintf(os.Stderr, "kubecheck: %s: %d documents valid\n", *name, len(docs))
		return
	}
	fmt.Printf("kubecheck: %s: %d documents valid\n", *name, len(docs))
}
