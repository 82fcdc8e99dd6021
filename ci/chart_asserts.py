#!/usr/bin/env python3
"""Assertions on the rendered restrictor chart (output of ci/check-chart.sh's helm template runs).

Usage: chart_asserts.py --namespace NS --ca-bundle B64 OUT_DIR
Reads OUT_DIR/<scenario>.yaml for the scenarios check-chart.sh renders. Prints one line per
failed assertion and exits 1 if any failed.
"""
import argparse
import base64
import json
import os
import sys

import yaml

FAILED = []
CHECKED = [0]


def check(cond, msg):
    CHECKED[0] += 1
    if not cond:
        FAILED.append(msg)
        print(f"  assertion failed: {msg}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, scenario):
    found = by_kind(docs, kind)
    check(len(found) == 1, f"{scenario}: expected exactly one {kind}, found {len(found)}")
    return found[0] if found else {}


def pod_specs(docs):
    """(name, pod spec) of every pod template in the rendering."""
    out = []
    for d in docs:
        kind = d.get("kind")
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            out.append((f"{kind}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            out.append((f"CronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def assert_restricted(scenario, name, spec):
    """The restricted checks that apply to our own pods (a subset of PSS restricted that our
    templates can get wrong; restrictor's own checker runs the full list when RESTRICTOR_BIN is set)."""
    psc = spec.get("securityContext", {})
    where = f"{scenario}: {name}"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        check(not spec.get(flag), f"{where}: {flag} set")
    check(psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot != true")
    check(psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532, f"{where}: pod uid/gid not 65532")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccompProfile not RuntimeDefault")
    for vol in spec.get("volumes", []):
        check(not (set(vol) & {"hostPath", "gcePersistentDisk", "awsElasticBlockStore", "nfs", "iscsi"}),
              f"{where}: volume {vol.get('name')} of a type restricted forbids")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        sc = c.get("securityContext", {})
        cw = f"{where} container {c['name']}"
        check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation != false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cw}: capabilities.drop != [ALL]")
        check(not sc.get("capabilities", {}).get("add"), f"{cw}: adds capabilities")
        check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem != true")
        check(sc.get("privileged") in (None, False), f"{cw}: privileged")
        check(sc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), f"{cw}: runs as root")
        check(not any(p.get("hostPort") for p in c.get("ports", [])), f"{cw}: hostPort")
        check("resources" in c and c["resources"].get("limits", {}).get("memory"), f"{cw}: no memory limit")


def rules_of(doc):
    return doc.get("rules", []) if doc else []


def assert_webhook(scenario, docs, ns, expect, ca_bundle=None):
    mwc = one(docs, "MutatingWebhookConfiguration", scenario)
    hooks = mwc.get("webhooks", [])
    names = [h["name"] for h in hooks]
    check(len(names) == len(set(names)), f"{scenario}: duplicate webhook names {names}")
    ann = mwc.get("metadata", {}).get("annotations", {}) or {}
    for h in hooks:
        w = f"{scenario}: webhook {h['name']}"
        check(h.get("admissionReviewVersions") == ["v1"], f"{w}: admissionReviewVersions != [v1]")
        check(h.get("sideEffects") == "None", f"{w}: sideEffects != None")
        check(h.get("reinvocationPolicy") == "IfNeeded", f"{w}: reinvocationPolicy != IfNeeded")
        check(h.get("matchPolicy") == "Equivalent", f"{w}: matchPolicy != Equivalent")
        check(1 <= int(h.get("timeoutSeconds", 0)) <= 30, f"{w}: timeoutSeconds out of range")
        svc = h.get("clientConfig", {}).get("service", {})
        check(svc.get("namespace") == ns and svc.get("path") == "/mutate", f"{w}: service ref {svc}")
        # the release namespace is never sent to the webhook
        exprs = h.get("namespaceSelector", {}).get("matchExpressions", [])
        check(any(e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn" and ns in e["values"]
                  for e in exprs), f"{w}: release namespace {ns} not excluded by kubernetes.io/metadata.name NotIn")
        check(any(e["key"] == "restrictor.dev/ignore" and e["operator"] == "NotIn" and e["values"] == ["true"]
                  for e in exprs), f"{w}: no namespace opt-out label")
        oexprs = h.get("objectSelector", {}).get("matchExpressions", [])
        check(any(e["key"] == "restrictor.dev/ignore" and e["operator"] == "NotIn" and e["values"] == ["true"]
                  for e in oexprs), f"{w}: no object opt-out label")
        # rules exactly as issue 5
        got = sorted((tuple(r["apiGroups"]), tuple(sorted(r["operations"])), tuple(sorted(r["resources"])))
                     for r in h.get("rules", []))
        want = sorted([
            (("apps",), ("CREATE", "UPDATE"), ("daemonsets", "deployments", "replicasets", "statefulsets")),
            (("batch",), ("CREATE", "UPDATE"), ("cronjobs", "jobs")),
            (("",), ("CREATE", "UPDATE"), ("podtemplates", "replicationcontrollers")),
            (("",), ("CREATE",), ("pods",)),
            (("",), ("UPDATE",), ("pods/ephemeralcontainers",)),
        ])
        check(got == want, f"{w}: rules {got} != {want}")
        for mc in h.get("matchConditions", []):
            check(mc.get("name") and mc.get("expression"), f"{w}: empty matchCondition")
        cab = h.get("clientConfig", {}).get("caBundle")
        if expect["tls"] == "secret":
            check(cab == ca_bundle, f"{w}: caBundle is not tls.caBundle")
            check(b"-----BEGIN CERTIFICATE-----" in base64.b64decode(cab or ""), f"{w}: caBundle is not a PEM cert")
        else:
            # self-managed: restrictor injects it; cert-manager: cainjector does. Rendering it
            # (even empty) would let `helm upgrade` wipe the injected value.
            check(cab is None, f"{w}: caBundle rendered in {expect['tls']} mode")
    if expect["tls"] == "cert-manager":
        check(ann.get("cert-manager.io/inject-ca-from") == f"{ns}/restrictor",
              f"{scenario}: inject-ca-from annotation {ann}")
    else:
        check("cert-manager.io/inject-ca-from" not in ann, f"{scenario}: inject-ca-from outside cert-manager mode")

    by_name = {h["name"]: h for h in hooks}
    ks = by_name.get("kube-system.restrictor.dev")
    if expect.get("kube_system", True):
        check(ks is not None, f"{scenario}: no kube-system webhook entry")
        if ks:
            check(ks["failurePolicy"] == "Ignore", f"{scenario}: kube-system entry failurePolicy {ks['failurePolicy']}")
            exprs = ks["namespaceSelector"]["matchExpressions"]
            check(any(e["operator"] == "In" and e["values"] == ["kube-system"] for e in exprs),
                  f"{scenario}: kube-system entry not limited to kube-system")
    else:
        check(ks is None, f"{scenario}: kube-system entry rendered although disabled")
    # every entry except the kube-system one excludes kube-system
    for h in hooks:
        if h is ks:
            continue
        exprs = h["namespaceSelector"]["matchExpressions"]
        check(any(e["operator"] == "NotIn" and "kube-system" in e["values"] for e in exprs),
              f"{scenario}: {h['name']} does not exclude kube-system")
    r = by_name.get("rancher.restrictor.dev")
    check(r is not None and r["failurePolicy"] == "Fail", f"{scenario}: rancher entry missing or not Fail")
    if r:
        check(any(mc["expression"] == "request.namespace.startsWith('cattle-')" for mc in r.get("matchConditions", [])),
              f"{scenario}: rancher entry not selected by the cattle- prefix")
    wl = by_name.get("workloads.restrictor.dev")
    check(wl is not None and wl["failurePolicy"] == expect.get("failure_policy", "Fail"),
          f"{scenario}: workloads entry failurePolicy {wl and wl['failurePolicy']}")
    if wl:
        check(any(mc["expression"] == "!request.namespace.startsWith('cattle-')" for mc in wl.get("matchConditions", [])),
              f"{scenario}: workloads entry does not leave cattle-* to the rancher entry")
    for extra in expect.get("excluded", []):
        for h in hooks:
            check(any(e["operator"] == "NotIn" and extra in e["values"] for e in h["namespaceSelector"]["matchExpressions"]),
                  f"{scenario}: {h['name']} does not exclude {extra}")
    noop = expect.get("skip_noop", True)
    for h in hooks:
        names_mc = [mc["name"] for mc in h.get("matchConditions", [])]
        check(("skip-update-without-spec-change" in names_mc) == noop, f"{scenario}: {h['name']} skip-noop conditions {names_mc}")


def selector_matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        val, op = labels.get(e["key"]), e["operator"]
        if op == "In" and val not in e["values"]:
            return False
        if op == "NotIn" and val in e["values"]:
            return False
        if op == "Exists" and val is None:
            return False
        if op == "DoesNotExist" and val is not None:
            return False
    return True


def namespace_condition(expression, namespace):
    """Evaluate the chart's namespace-prefix matchConditions (the only ones that depend on the namespace)."""
    for neg, tmpl in ((False, "request.namespace.startsWith('"), (True, "!request.namespace.startsWith('")):
        if expression.startswith(tmpl) and expression.endswith("')"):
            prefix = expression[len(tmpl):-2]
            return namespace.startswith(prefix) != neg
    return None  # not a namespace condition


def assert_routing(scenario, docs, ns, expect):
    """Which entry the API server would call, per namespace, as its namespaceSelector and the
    namespace matchConditions say: at most one, the right failurePolicy, never the release namespace."""
    mwc = one(docs, "MutatingWebhookConfiguration", scenario)
    cases = {
        ns: None,
        "kube-system": "Ignore" if expect.get("kube_system", True) else None,
        "cattle-system": "Fail", "cattle-fleet-system": "Fail", "cattle-impersonation-system": "Fail",
        "cattle-monitoring-system": "Fail",
        "default": expect.get("failure_policy", "Fail"), "team-x": expect.get("failure_policy", "Fail"),
        "kube-public": expect.get("failure_policy", "Fail"),
    }
    for extra in expect.get("excluded", []):
        cases[extra] = None
    for namespace, want in cases.items():
        for opted_out in (False, True):
            labels = {"kubernetes.io/metadata.name": namespace}
            if opted_out:
                labels["restrictor.dev/ignore"] = "true"
            called = []
            for h in mwc.get("webhooks", []):
                if not selector_matches(h.get("namespaceSelector", {}), labels):
                    continue
                results = [namespace_condition(mc["expression"], namespace) for mc in h.get("matchConditions", [])]
                if any(r is False for r in results):
                    continue
                called.append(h)
            expected = None if opted_out else want
            got = [h["failurePolicy"] for h in called]
            check(len(called) <= 1, f"{scenario}: namespace {namespace} matched by {len(called)} entries")
            check((got[0] if got else None) == expected,
                  f"{scenario}: namespace {namespace}{' (opted out)' if opted_out else ''} -> {got}, expected {expected}")
    # object opt-out label: no entry selects an object carrying it
    for h in mwc.get("webhooks", []):
        check(not selector_matches(h.get("objectSelector", {}), {"restrictor.dev/ignore": "true"}),
              f"{scenario}: {h['name']} selects opted-out objects")
        check(selector_matches(h.get("objectSelector", {}), {}), f"{scenario}: {h['name']} skips unlabelled objects")


def assert_rbac(scenario, docs, ns, expect):
    role = [d for d in by_kind(docs, "Role") if d["metadata"]["name"] == "restrictor"]
    crole = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "restrictor"]
    dep = one(docs, "Deployment", scenario)
    spec = dep.get("spec", {}).get("template", {}).get("spec", {})
    needs_api = expect["tls"] == "self-managed" or expect["reconcile"]
    check(spec.get("automountServiceAccountToken") is needs_api,
          f"{scenario}: automountServiceAccountToken {spec.get('automountServiceAccountToken')} (API needed: {needs_api})")
    sa = [d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == "restrictor"]
    check(sa and sa[0].get("automountServiceAccountToken") is False, f"{scenario}: ServiceAccount automounts a token")
    if not needs_api:
        check(not role and not crole, f"{scenario}: RBAC rendered although restrictor needs no API access")
        check(not [d for d in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
                   if d["metadata"]["name"] == "restrictor"], f"{scenario}: bindings rendered without RBAC")
        return
    check(len(role) == 1 and len(crole) == 1, f"{scenario}: expected Role and ClusterRole 'restrictor'")
    rrules = rules_of(role[0]) if role else []
    crules = rules_of(crole[0]) if crole else []
    for rule in rrules + crules:
        check("*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), f"{scenario}: wildcard in {rule}")
        check("delete" not in rule.get("verbs", []), f"{scenario}: delete granted to the server: {rule}")
        # create is the only verb allowed without resourceNames on namespaced objects
        if rule.get("resources") in (["secrets"], ["leases"]) and "resourceNames" not in rule:
            check(rule["verbs"] == ["create"], f"{scenario}: unrestricted {rule['resources']} verbs {rule['verbs']}")
    secret_rules = [r for r in rrules if r["resources"] == ["secrets"]]
    mwc_rules = [r for r in crules if r["resources"] == ["mutatingwebhookconfigurations"]]
    lease_rules = [r for r in rrules if r["resources"] == ["leases"]]
    work_rules = [r for r in crules if r["apiGroups"] in (["apps"], ["batch"]) or r["resources"] == ["pods"]]
    if expect["tls"] == "self-managed":
        # exactly the calls of src/cluster/secret.rs and mod.rs: get, update (PUT), list + watch
        check(any(r.get("resourceNames") == ["restrictor-tls"] and set(r["verbs"]) == {"get", "list", "update", "watch"}
                  for r in secret_rules), f"{scenario}: the one Secret: verbs must be exactly get, list, update, watch")
        check(len(secret_rules) == 2, f"{scenario}: secret rules {secret_rules}")
        check(any(r["verbs"] == ["create"] and "resourceNames" not in r for r in secret_rules),
              f"{scenario}: no create on secrets")
        check(len(mwc_rules) == 1 and mwc_rules[0].get("resourceNames") == ["restrictor"]
              and set(mwc_rules[0]["verbs"]) == {"get", "list", "patch", "watch"},
              f"{scenario}: MutatingWebhookConfiguration rule {mwc_rules}")
        args = spec["containers"][0]["args"]
        for a in ("--self-managed-certs", "--service=restrictor", "--secret=restrictor-tls", "--webhook-config=restrictor"):
            check(a in args, f"{scenario}: missing arg {a}")
    else:
        check(not secret_rules and not mwc_rules, f"{scenario}: Secret/webhook RBAC outside self-managed mode")
    if expect["reconcile"]:
        lease = expect.get("lease", "restrictor-reconcile")
        check(any(r.get("resourceNames") == [lease] and set(r["verbs"]) == {"get", "update"} for r in lease_rules),
              f"{scenario}: lease rule {lease_rules}")
        check(any(r["apiGroups"] == ["apps"] and set(r["resources"]) == {"deployments", "statefulsets", "daemonsets"}
                  and set(r["verbs"]) == {"list", "patch"} for r in work_rules), f"{scenario}: workload rules {work_rules}")
        check(any(r["apiGroups"] == ["batch"] and r["resources"] == ["jobs"] and r["verbs"] == ["list"] for r in work_rules),
              f"{scenario}: jobs list")
        check(any(r["resources"] == ["pods"] and r["verbs"] == ["list"] for r in work_rules), f"{scenario}: pods list")
        # the admission probe: create pods, which a ValidatingAdmissionPolicy limits to dry runs, and
        # list events; a Role per reconciled namespace when the chart knows them, else cluster-wide
        probe_rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
                       {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]
        reconciled = expect.get("reconcile_namespaces", [])
        probe_roles = [d for d in by_kind(docs, "Role") if d["metadata"]["name"] == "restrictor-probe"]
        probe_bindings = [d for d in by_kind(docs, "RoleBinding") if d["metadata"]["name"] == "restrictor-probe"]
        cluster_probe = [r for r in crules if r in probe_rules]
        if reconciled:
            check(not cluster_probe, f"{scenario}: probe grants cluster-wide although the namespaces are known: {cluster_probe}")
            check(sorted(d["metadata"]["namespace"] for d in probe_roles) == sorted(reconciled),
                  f"{scenario}: probe Roles in {[d['metadata']['namespace'] for d in probe_roles]}, want {reconciled}")
            for role in probe_roles:
                check(rules_of(role) == probe_rules, f"{scenario}: probe Role rules {rules_of(role)}")
            check(sorted(d["metadata"]["namespace"] for d in probe_bindings) == sorted(reconciled),
                  f"{scenario}: probe RoleBindings in {[d['metadata']['namespace'] for d in probe_bindings]}")
            for binding in probe_bindings:
                check(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "restrictor-probe"}
                      and binding["subjects"] == [{"kind": "ServiceAccount", "name": "restrictor", "namespace": ns}],
                      f"{scenario}: probe RoleBinding {binding['roleRef']} {binding['subjects']}")
        else:
            check(not probe_roles and not probe_bindings, f"{scenario}: probe Roles without reconcileExisting.namespaces")
            check(cluster_probe == probe_rules, f"{scenario}: probe grants (pods create, events list) in the ClusterRole: {cluster_probe}")
        vap = [d for d in by_kind(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"] == "restrictor-dry-run-pods-only"]
        check(len(vap) == 1 and any(v["expression"] == "request.dryRun == true" for v in vap[0]["spec"]["validations"]),
              f"{scenario}: pod creates not limited to dry runs")
        # the Binding is what makes the policy act: the right policy, denying
        vapb = [d for d in by_kind(docs, "ValidatingAdmissionPolicyBinding")
                if d["metadata"]["name"] == "restrictor-dry-run-pods-only"]
        check(len(vapb) == 1 and vap and vapb[0]["spec"].get("policyName") == vap[0]["metadata"]["name"],
              f"{scenario}: ValidatingAdmissionPolicyBinding does not bind {[d['metadata']['name'] for d in vap]}")
        check(len(vapb) == 1 and vapb[0]["spec"].get("validationActions") == ["Deny"],
              f"{scenario}: ValidatingAdmissionPolicyBinding validationActions must be [Deny]")
        check(len(vapb) == 1 and "paramRef" not in vapb[0]["spec"] and "matchResources" not in vapb[0]["spec"],
              f"{scenario}: ValidatingAdmissionPolicyBinding narrowed by paramRef/matchResources")
        check(len(vap) == 1 and vap[0]["spec"].get("failurePolicy") == "Fail",
              f"{scenario}: ValidatingAdmissionPolicy failurePolicy must be Fail")
        check(len(vap) == 1 and vap[0]["spec"]["matchConstraints"]["resourceRules"] == [
                  {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
              f"{scenario}: ValidatingAdmissionPolicy does not match pod CREATEs")
        check(f"--lease-name={lease}" in spec["containers"][0]["args"], f"{scenario}: --lease-name arg")
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        check(env.get("RESTRICTOR_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              f"{scenario}: RESTRICTOR_POD_NAME (the Lease identity) not from the downward API")
        check(len(lease_rules) == 2 and len(work_rules) == (3 if reconciled else 4),
              f"{scenario}: reconcile rules {lease_rules} {work_rules}")
    else:
        check(not lease_rules and not work_rules, f"{scenario}: reconcile RBAC without reconcile")
        check("--reconcile-existing" not in spec["containers"][0]["args"], f"{scenario}: --reconcile-existing without reconcile")


def assert_deployment(scenario, docs, expect):
    dep = one(docs, "Deployment", scenario)
    if not dep:
        return
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    args = c["args"]
    check(args[0] == "serve", f"{scenario}: first arg is not the serve subcommand")
    want_replicas = None if expect.get("hpa") else expect.get("replicas", 2)
    check(dep["spec"].get("replicas") == want_replicas,
          f"{scenario}: replicas {dep['spec'].get('replicas')} (expected {want_replicas}; the HPA owns them when enabled)")
    check(c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}, f"{scenario}: liveness probe")
    check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, f"{scenario}: readiness probe")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"https": 8443, "admin": 8080}, f"{scenario}: ports {ports}")
    def seconds(flag):
        v = next((a.split("=", 1)[1] for a in args if a.startswith(flag + "=")), None)
        return int(v[:-1]) if v and v.endswith("s") and v[:-1].isdigit() else None
    grace, delay = seconds("--shutdown-grace"), seconds("--shutdown-delay")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check(grace is not None and delay is not None
          and spec["terminationGracePeriodSeconds"] > grace + delay + pre,
          f"{scenario}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} <= drain {pre}+{delay}+{grace}")
    check(delay is not None and delay > 0, f"{scenario}: --shutdown-delay is 0: endpoints may still route to a closed listener")
    check(c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory"), f"{scenario}: requests")
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("RESTRICTOR_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
          f"{scenario}: RESTRICTOR_NAMESPACE not from the downward API")
    aff = spec.get("affinity", {}).get("podAntiAffinity", {})
    check(aff.get("preferredDuringSchedulingIgnoredDuringExecution") and not aff.get("requiredDuringSchedulingIgnoredDuringExecution"),
          f"{scenario}: anti-affinity is not preferred-only")
    check(all(t["whenUnsatisfiable"] == "ScheduleAnyway" for t in spec.get("topologySpreadConstraints", [])),
          f"{scenario}: topology spread is not ScheduleAnyway")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for m in mounts.values():
        check("subPath" not in m, f"{scenario}: subPath mount {m['name']} would never see updates")
    if expect["tls"] == "self-managed":
        check("tls" not in vols, f"{scenario}: TLS volume in self-managed mode")
    else:
        check("--tls-cert=/etc/restrictor/tls/tls.crt" in args and "--tls-key=/etc/restrictor/tls/tls.key" in args,
              f"{scenario}: --tls-cert/--tls-key args")
        check(vols.get("tls", {}).get("secret", {}).get("secretName") == expect.get("secret", "restrictor-tls"),
              f"{scenario}: tls volume {vols.get('tls')}")
        check(mounts.get("tls", {}).get("mountPath") == "/etc/restrictor/tls", f"{scenario}: tls mount")
    if expect.get("policy"):
        check("--policy=/etc/restrictor/policy/policy.yaml" in args, f"{scenario}: --policy arg")
        check(vols.get("policy", {}).get("configMap", {}).get("name") == "restrictor-policy", f"{scenario}: policy volume")
        check(mounts.get("policy", {}).get("mountPath") == "/etc/restrictor/policy", f"{scenario}: policy mount dir")
        cms = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "restrictor-policy"]
        check(len(cms) == 1 and "policy.yaml" in cms[0].get("data", {}), f"{scenario}: policy ConfigMap")
        if cms:
            yaml.safe_load(cms[0]["data"]["policy.yaml"])
    else:
        check(not any(a.startswith("--policy") for a in args), f"{scenario}: --policy without a policy")
        check(not [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == "restrictor-policy"],
              f"{scenario}: policy ConfigMap without a policy")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if expect.get("replicas", 2) > 1:
        check(len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") is not None, f"{scenario}: PDB missing")
        if pdbs:
            check(pdbs[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
                  f"{scenario}: PDB selector != Deployment selector")
    else:
        check(not pdbs, f"{scenario}: PDB with a single replica blocks every drain")
    svc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "restrictor"]
    check(len(svc) == 1 and svc[0]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], f"{scenario}: Service selector")
    if svc:
        check([p["targetPort"] for p in svc[0]["spec"]["ports"]] == ["https"], f"{scenario}: webhook Service exposes more than https")


def assert_hook(scenario, docs, expect):
    jobs = by_kind(docs, "Job")
    if not expect.get("hook", True):
        check(not jobs, f"{scenario}: hook Job although disabled")
        return
    check(len(jobs) == 1, f"{scenario}: expected the uninstall hook Job")
    if not jobs:
        return
    job = jobs[0]
    ann = job["metadata"].get("annotations", {})
    check(ann.get("helm.sh/hook") == "pre-delete", f"{scenario}: hook Job is not pre-delete")
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check(c["args"][:2] == ["uninstall", "--webhook-config=restrictor"], f"{scenario}: hook args {c['args']}")
    check(spec["serviceAccountName"] == "restrictor-uninstall", f"{scenario}: hook uses the server's ServiceAccount")
    dep = one(docs, "Deployment", scenario)
    check(c["image"] == dep["spec"]["template"]["spec"]["containers"][0]["image"], f"{scenario}: hook image differs")
    cr = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "restrictor-uninstall"]
    check(len(cr) == 1 and cr[0]["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                                               "resources": ["mutatingwebhookconfigurations"],
                                               "resourceNames": ["restrictor"], "verbs": ["delete"]}],
          f"{scenario}: hook ClusterRole is not 'delete the one configuration'")
    for d in docs:
        if d["metadata"]["name"] == "restrictor-uninstall":
            check(d["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete",
                  f"{scenario}: {d['kind']}/restrictor-uninstall is not a pre-delete hook resource")


def assert_cert_manager(scenario, docs, ns, issuer_given):
    certs = {d["metadata"]["name"]: d for d in by_kind(docs, "Certificate")}
    issuers = {d["metadata"]["name"]: d for d in by_kind(docs, "Issuer")}
    serving = certs.get("restrictor")
    check(serving is not None, f"{scenario}: no serving Certificate 'restrictor'")
    if not serving:
        return
    s = serving["spec"]
    check(s.get("secretName") == "restrictor-tls", f"{scenario}: serving Certificate secretName")
    check(s.get("dnsNames") == ["restrictor", f"restrictor.{ns}", f"restrictor.{ns}.svc", f"restrictor.{ns}.svc.cluster.local"],
          f"{scenario}: dnsNames {s.get('dnsNames')}")
    check("server auth" in s.get("usages", []), f"{scenario}: serving Certificate lacks server auth")
    check(s.get("privateKey", {}).get("algorithm") == "ECDSA", f"{scenario}: not ECDSA")
    for d in list(certs.values()) + list(issuers.values()):
        check(d.get("apiVersion") == "cert-manager.io/v1" and d["metadata"].get("namespace") == ns,
              f"{scenario}: {d['kind']}/{d['metadata']['name']} apiVersion/namespace")
    if issuer_given:
        check(not issuers and len(certs) == 1, f"{scenario}: chart created issuers although issuerRef was given")
        check(s["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
              f"{scenario}: issuerRef {s['issuerRef']}")
    else:
        check(set(issuers) == {"restrictor-selfsigned", "restrictor-ca"}, f"{scenario}: issuers {sorted(issuers)}")
        check(certs.get("restrictor-ca", {}).get("spec", {}).get("isCA") is True, f"{scenario}: CA Certificate not isCA")
        check(s["issuerRef"]["name"] == "restrictor-ca", f"{scenario}: serving cert not issued by the CA issuer")
        check(issuers["restrictor-ca"]["spec"]["ca"]["secretName"] == certs["restrictor-ca"]["spec"]["secretName"],
              f"{scenario}: CA issuer does not use the CA certificate's secret")


def assert_observability(scenario, docs, ns):
    nps = by_kind(docs, "NetworkPolicy")
    check(len(nps) == 1, f"{scenario}: NetworkPolicy missing")
    if nps:
        ports = [p["port"] for rule in nps[0]["spec"]["ingress"] for p in rule["ports"]]
        check(sorted(ports) == ["admin", "https"], f"{scenario}: NetworkPolicy ports {ports}")
        metrics_rule = [r for r in nps[0]["spec"]["ingress"] if r["ports"][0]["port"] == "admin"][0]
        check(metrics_rule.get("from"), f"{scenario}: metricsFrom not applied")
    sms = by_kind(docs, "ServiceMonitor")
    check(len(sms) == 1, f"{scenario}: ServiceMonitor missing")
    admin = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "restrictor-admin"]
    check(len(admin) == 1, f"{scenario}: admin Service missing")
    if sms and admin:
        sm = sms[0]
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"{scenario}: ServiceMonitor apiVersion")
        check(sm["spec"]["endpoints"][0]["port"] == admin[0]["spec"]["ports"][0]["name"] == "admin", f"{scenario}: scrape port")
        check(sm["spec"]["endpoints"][0]["path"] == "/metrics", f"{scenario}: scrape path")
        labels = admin[0]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
              f"{scenario}: ServiceMonitor selector does not select the admin Service")


def assert_audit_extras(scenario, docs, expect):
    """HPA, Grafana dashboard, PolicyReports and Events: rendered exactly when enabled, with the
    RBAC each needs and nothing more."""
    dep = one(docs, "Deployment", scenario)
    container = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
    args = container.get("args", [])
    env = {e["name"]: e for e in container.get("env", [])}
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRole")}
    bindings = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRoleBinding")}
    ns_roles = {d["metadata"]["name"]: d for d in by_kind(docs, "Role")}
    ns_bindings = {d["metadata"]["name"]: d for d in by_kind(docs, "RoleBinding")}

    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if expect.get("hpa"):
        check(len(hpas) == 1, f"{scenario}: expected one HorizontalPodAutoscaler")
        if hpas:
            h = hpas[0]
            check(h["apiVersion"] == "autoscaling/v2", f"{scenario}: HPA apiVersion {h['apiVersion']}")
            check(h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": dep["metadata"]["name"]},
                  f"{scenario}: HPA target {h['spec']['scaleTargetRef']}")
            check((h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == expect["hpa"],
                  f"{scenario}: HPA replicas {h['spec']['minReplicas']}..{h['spec']['maxReplicas']}")
            metric = h["spec"]["metrics"][0]
            check(metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
                  and metric["resource"]["target"]["type"] == "Utilization",
                  f"{scenario}: HPA metric {metric}")
    else:
        check(not hpas, f"{scenario}: HPA rendered although autoscaling is disabled")

    dashboards = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == "restrictor-dashboard"]
    if expect.get("dashboard"):
        check(len(dashboards) == 1, f"{scenario}: expected the dashboard ConfigMap")
        if dashboards:
            cm = dashboards[0]
            check(cm["metadata"]["labels"].get("grafana_dashboard") == "1",
                  f"{scenario}: dashboard ConfigMap lacks the sidecar label grafana_dashboard=1")
            check(cm["metadata"].get("annotations", {}).get("grafana_folder") == "restrictor",
                  f"{scenario}: dashboard annotations not applied")
            board = json.loads(cm["data"]["restrictor.json"])
            check(board.get("uid") and board.get("panels"), f"{scenario}: dashboard JSON has no uid or panels")
    else:
        check(not dashboards, f"{scenario}: dashboard rendered although disabled")

    reports_role = roles.get("restrictor-reports")
    if expect.get("reports"):
        want = [
            {"apiGroups": [""], "resources": ["pods", "podtemplates", "replicationcontrollers"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"], "verbs": ["list"]},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
            {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "resourceNames": ["restrictor"],
             "verbs": ["get", "create", "patch"]},
        ]
        check(reports_role is not None and reports_role["rules"] == want,
              f"{scenario}: restrictor-reports ClusterRole {reports_role and reports_role['rules']}")
        check("restrictor-reports" in bindings
              and bindings["restrictor-reports"]["roleRef"]["name"] == "restrictor-reports",
              f"{scenario}: restrictor-reports not bound")
        check("--reports" in args and f"--reports-interval={expect['reports']}" in args
              and "--reports-lease-name=restrictor-reports" in args,
              f"{scenario}: --reports args {args}")
        # Only the holder of the reports Lease writes: a Role in the release namespace for it.
        lease_role = ns_roles.get("restrictor-reports")
        check(lease_role is not None and lease_role["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["restrictor-reports"], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}],
              f"{scenario}: restrictor-reports Role {lease_role and lease_role['rules']}")
        check("restrictor-reports" in ns_bindings
              and ns_bindings["restrictor-reports"]["roleRef"] == {
                  "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "restrictor-reports"},
              f"{scenario}: restrictor-reports Role not bound")
        check("RESTRICTOR_POD_NAME" in env, f"{scenario}: no pod name for the reports Lease identity")
        if expect.get("reports_namespaces"):
            check(f"--reports-namespaces={expect['reports_namespaces']}" in args, f"{scenario}: --reports-namespaces")
    else:
        check(reports_role is None and "restrictor-reports" not in ns_roles and "--reports" not in args,
              f"{scenario}: reports RBAC/args although disabled")

    events_role = roles.get("restrictor-events")
    if expect.get("events"):
        check(events_role is not None and events_role["rules"] == [
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}],
              f"{scenario}: restrictor-events ClusterRole {events_role and events_role['rules']}")
        check("restrictor-events" in bindings, f"{scenario}: restrictor-events not bound")
        check("--events" in args, f"{scenario}: --events arg")
        check(env.get("RESTRICTOR_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
              f"{scenario}: RESTRICTOR_POD_NAME (reportingInstance) not from the downward API")
    else:
        check(events_role is None and "--events" not in args, f"{scenario}: events RBAC/args although disabled")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--ca-bundle", required=True)
    ap.add_argument("out_dir")
    a = ap.parse_args()
    ns = a.namespace
    scenarios = {
        "default": dict(tls="self-managed", reconcile=True),
        "ha-off": dict(tls="self-managed", reconcile=True, replicas=1),
        "ha-on": dict(tls="self-managed", reconcile=True, replicas=3),
        "self-managed-no-reconcile": dict(tls="self-managed", reconcile=False),
        "cert-manager": dict(tls="cert-manager", reconcile=True),
        "cert-manager-issuer": dict(tls="cert-manager", reconcile=False, issuer=True),
        "secret": dict(tls="secret", reconcile=True),
        "secret-no-reconcile": dict(tls="secret", reconcile=False),
        "observability": dict(tls="self-managed", reconcile=True, observability=True),
        "reconcile-on": dict(tls="self-managed", reconcile=True, lease="my-lease",
                             reconcile_namespaces=["cattle-system", "cattle-fleet-system"]),
        "policy": dict(tls="self-managed", reconcile=True, policy=True, failure_policy="Ignore",
                       kube_system=False, excluded=["team-a", "team-b"]),
        "no-match-conditions": dict(tls="self-managed", reconcile=True, skip_noop=False, hook=False),
        "reports-events": dict(tls="self-managed", reconcile=True, reports="30m",
                               reports_namespaces="cattle-system,team-a", events=True),
        "autoscaling-dashboard": dict(tls="self-managed", reconcile=True, hpa=(3, 8), dashboard=True),
    }
    for name, expect in scenarios.items():
        path = os.path.join(a.out_dir, f"{name}.yaml")
        if not os.path.exists(path):
            check(False, f"{name}: not rendered")
            continue
        docs = load(path)
        for d in docs:
            check(d["metadata"].get("name"), f"{name}: {d.get('kind')} without a name")
            probe_grant = (d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == "restrictor-probe"
                           and d["metadata"].get("namespace") in expect.get("reconcile_namespaces", []))
            if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding") and not probe_grant:
                check(d["metadata"].get("namespace") == ns, f"{name}: {d['kind']}/{d['metadata']['name']} not in {ns}")
            check(d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "restrictor",
                  f"{name}: {d['kind']}/{d['metadata']['name']} lacks the standard labels")
        assert_webhook(name, docs, ns, expect, a.ca_bundle)
        assert_routing(name, docs, ns, expect)
        assert_rbac(name, docs, ns, expect)
        assert_deployment(name, docs, expect)
        assert_hook(name, docs, expect)
        assert_audit_extras(name, docs, expect)
        for pname, spec in pod_specs(docs):
            assert_restricted(name, pname, spec)
        if expect["tls"] == "cert-manager":
            assert_cert_manager(name, docs, ns, expect.get("issuer", False))
        else:
            check(not by_kind(docs, "Certificate") and not by_kind(docs, "Issuer"), f"{name}: cert-manager objects outside cert-manager mode")
        if expect.get("observability"):
            assert_observability(name, docs, ns)
        else:
            check(not by_kind(docs, "NetworkPolicy") and not by_kind(docs, "ServiceMonitor"), f"{name}: optional objects rendered")
    print(f"chart_asserts: {CHECKED[0] - len(FAILED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
