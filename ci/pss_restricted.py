#!/usr/bin/env python3
"""Pod Security Standards "restricted" checker, independent of restrictor's own (src/pss).

Written from the upstream evaluator, kubernetes/kubernetes
staging/src/k8s.io/pod-security-admission/policy/check_*.go (release-1.36, where `latest` is policy
version 1.35), so that a test of restrictor's output never checks restrictor against itself.
Restricted = every Baseline check, minus the ones a Restricted check overrides (hostPathVolumes,
seccompProfile_baseline, capabilities_baseline, procMount), plus the Restricted checks. Containers
are init, regular and ephemeral containers alike (visitor.go); native sidecars get no exemption.

Input: YAML or JSON files (multi-document; `-` is stdin). Every pod-bearing object is checked the
way the PodSecurity admission plugin checks it: a Pod's spec, a workload's pod template (with the
template's metadata). Other objects are skipped.

Output: one line per failing check, `<Kind> <namespace>/<name>: <reason> (<detail>)`, the reason
being upstream's ForbiddenReason and the detail naming the pod or containers at fault; a summary
on stderr.
Exit: 0 no violation, 1 violations, 2 unreadable input or no pod-bearing object at all.

Usage: ci/pss_restricted.py FILE...
"""

import sys

import yaml

# -- where the pod spec sits ----------------------------------------------------------------------

TEMPLATE_PATHS = {
    "Pod": (),
    "PodTemplate": ("template",),
    "ReplicationController": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_of(obj):
    """(metadata, spec) of the pod an object creates, or None for objects without pods."""
    path = TEMPLATE_PATHS.get(obj.get("kind"))
    if path is None:
        return None
    node = obj
    for key in path:
        node = (node or {}).get(key)
    node = node or {}
    return node.get("metadata") or {}, node.get("spec") or {}


def containers(spec):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            yield c


def sc(container):
    return container.get("securityContext") or {}


def pod_sc(spec):
    return spec.get("securityContext") or {}


def quote(items):
    return ", ".join(f'"{i}"' for i in items)


def plural(singular, many, n):
    return singular if n == 1 else many


def is_windows(spec):
    # allowPrivilegeEscalation, seccompProfile_restricted and capabilities_restricted >= 1.25
    return ((spec.get("os") or {}).get("name")) == "windows"


def user_namespace(spec):
    # helpers.go relaxPolicyForUserNamespacePod (unconditional from policy 1.35)
    return spec.get("hostUsers") is False


# -- Baseline checks kept in Restricted ----------------------------------------------------------


def host_namespaces(meta, spec):
    bad = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
    if bad:
        return "host namespaces", ", ".join(bad)
    return None


def privileged(meta, spec):
    bad = [c.get("name") for c in containers(spec) if sc(c).get("privileged") is True]
    if bad:
        return "privileged", f'{plural("container", "containers", len(bad))} {quote(bad)} must not set securityContext.privileged=true'
    return None


def containers_using(spec, values_of):
    """The containers for which values_of(container) is not empty, and all those values."""
    names, values = [], []
    for c in containers(spec):
        found = values_of(c)
        if found:
            names.append(c.get("name"))
            values += found
    return names, values


def host_ports(meta, spec):
    bad, ports = containers_using(
        spec, lambda c: [str(p.get("hostPort")) for p in c.get("ports") or [] if p.get("hostPort")]
    )
    if bad:
        return "hostPort", f'{plural("container", "containers", len(bad))} {quote(bad)} {plural("uses", "use", len(bad))} {plural("hostPort", "hostPorts", len(ports))} {", ".join(ports)}'
    return None


APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def app_armor(meta, spec):
    bad = []
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(APPARMOR_PREFIX) and not (
            value in ("", "runtime/default") or str(value).startswith("localhost/")
        ):
            bad.append(f'{key}="{value}"')
    profiles = [("pod", pod_sc(spec).get("appArmorProfile"))]
    profiles += [(f'container "{c.get("name")}"', sc(c).get("appArmorProfile")) for c in containers(spec)]
    for who, profile in profiles:
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f'{who} appArmorProfile.type="{profile.get("type")}"')
    if bad:
        return plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(bad)), ", ".join(sorted(bad))
    return None


SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}  # 1.31


def se_linux(meta, spec):
    bad = []
    options = [("pod", pod_sc(spec).get("seLinuxOptions"))]
    options += [(f'container "{c.get("name")}"', sc(c).get("seLinuxOptions")) for c in containers(spec)]
    for who, opts in options:
        if opts and (opts.get("type", "") not in SELINUX_TYPES or opts.get("user") or opts.get("role")):
            bad.append(who)
    if bad:
        return "seLinuxOptions", f"{' and '.join(bad)} set forbidden securityContext.seLinuxOptions"
    return None


SAFE_SYSCTLS = {  # 1.0, 1.27, 1.29, 1.32
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
}


def sysctls(meta, spec):
    bad = [s.get("name") for s in pod_sc(spec).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    if bad:
        return "forbidden sysctls", ", ".join(bad)
    return None


def windows_host_process(meta, spec):
    setters = []
    if (pod_sc(spec).get("windowsOptions") or {}).get("hostProcess") is True:
        setters.append("pod")
    setters += [c.get("name") for c in containers(spec) if (sc(c).get("windowsOptions") or {}).get("hostProcess") is True]
    if setters:
        return "hostProcess", f"{quote(setters)} must not set securityContext.windowsOptions.hostProcess=true"
    return None


def probe_and_lifecycle_hosts(c):
    handlers = [c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
    handlers += [(c.get("lifecycle") or {}).get(h) for h in ("postStart", "preStop")]
    return [
        (h.get(kind) or {}).get("host")
        for h in handlers
        if h
        for kind in ("httpGet", "tcpSocket")
        if (h.get(kind) or {}).get("host")
    ]


def host_probes_and_lifecycle(meta, spec):  # 1.34
    bad, hosts = containers_using(spec, probe_and_lifecycle_hosts)
    if bad:
        return "probe or lifecycle host", f'{plural("container", "containers", len(bad))} {quote(bad)} {plural("uses", "use", len(bad))} {quote(sorted(set(hosts)))}'
    return None


# -- Restricted checks ---------------------------------------------------------------------------

ALLOWED_VOLUME_SOURCES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
    "persistentVolumeClaim", "projected", "secret",
}


def restricted_volumes(meta, spec):
    bad = []
    for v in spec.get("volumes") or []:
        sources = [k for k in v if k != "name"]
        # A volume that names no source is defaulted to emptyDir by the API server before
        # admission (SetDefaults_Volume), so the evaluator never sees it without one.
        if sources and not all(k in ALLOWED_VOLUME_SOURCES for k in sources):
            bad.append(v.get("name"))
    if bad:
        return "restricted volume types", f'{plural("volume", "volumes", len(bad))} {quote(bad)} {plural("uses", "use", len(bad))} restricted volume types'
    return None


def allow_privilege_escalation(meta, spec):  # 1.25
    if is_windows(spec):
        return None
    bad = [c.get("name") for c in containers(spec) if sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return "allowPrivilegeEscalation != false", f'{plural("container", "containers", len(bad))} {quote(bad)} must set securityContext.allowPrivilegeEscalation=false'
    return None


def pod_or_every_container(spec, value_of, is_valid):
    """The shape upstream's runAsNonRoot and seccompProfile checks share: a valid pod-level value
    covers the containers that set none; an invalid value, at either level, is named.
    Returns (who sets an invalid value, containers left unset with no valid pod value, the
    invalid values)."""
    setters, bad_values, pod_ok = [], set(), False
    pod_value = value_of(pod_sc(spec))
    if pod_value is not None:
        if is_valid(pod_value):
            pod_ok = True
        else:
            setters.append("pod")
            bad_values.add(str(pod_value))
    explicit, implicit = [], []
    for c in containers(spec):
        value = value_of(sc(c))
        if value is None:
            if not pod_ok:
                implicit.append(c.get("name"))
        elif not is_valid(value):
            explicit.append(c.get("name"))
            bad_values.add(str(value))
    if explicit:
        setters.append(f'{plural("container", "containers", len(explicit))} {quote(explicit)}')
    return setters, implicit, sorted(bad_values)


def pod_or_every_container_result(spec, reason, value_of, is_valid, forbidden, requirement):
    """The result of such a check: `forbidden(bad values)` names what invalid values must not be,
    `requirement` what a container left unset must have."""
    setters, implicit, bad_values = pod_or_every_container(spec, value_of, is_valid)
    if setters:
        return reason, f"{' and '.join(setters)} must not set {forbidden(bad_values)}"
    if implicit:
        return reason, f'pod or {plural("container", "containers", len(implicit))} {quote(implicit)} must set {requirement}'
    return None


def run_as_non_root(meta, spec):  # 1.35
    if user_namespace(spec):
        return None
    return pod_or_every_container_result(
        spec, "runAsNonRoot != true",
        lambda ctx: ctx.get("runAsNonRoot"), lambda value: value is True,
        lambda _: "securityContext.runAsNonRoot=false", "securityContext.runAsNonRoot=true",
    )


def run_as_user(meta, spec):  # 1.35
    if user_namespace(spec):
        return None
    setters = ["pod"] if pod_sc(spec).get("runAsUser") == 0 else []
    bad = [c.get("name") for c in containers(spec) if sc(c).get("runAsUser") == 0]
    if bad:
        setters.append(f'{plural("container", "containers", len(bad))} {quote(bad)}')
    if setters:
        return "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0"
    return None


def seccomp_type(ctx):
    # a seccompProfile without a type is an invalid one (""), not an absent one
    profile = ctx.get("seccompProfile")
    return None if profile is None else profile.get("type", "")


def seccomp_profile(meta, spec):  # 1.25
    if is_windows(spec):
        return None
    return pod_or_every_container_result(
        spec, "seccompProfile",
        seccomp_type, lambda kind: kind in ("RuntimeDefault", "Localhost"),
        lambda bad: f"securityContext.seccompProfile.type to {quote(bad)}",
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
    )


def capabilities(meta, spec):  # 1.25
    if is_windows(spec):
        return None
    missing_drop, adding, added = [], [], set()
    for c in containers(spec):
        caps = sc(c).get("capabilities")
        if caps is None:
            missing_drop.append(c.get("name"))
            continue
        if "ALL" not in (caps.get("drop") or []):
            missing_drop.append(c.get("name"))
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.get("name"))
            added.update(extra)
    details = []
    if missing_drop:
        details.append(f'{plural("container", "containers", len(missing_drop))} {quote(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f'{plural("container", "containers", len(adding))} {quote(adding)} must not include {quote(sorted(added))} in securityContext.capabilities.add')
    if details:
        return "unrestricted capabilities", "; ".join(details)
    return None


def proc_mount(meta, spec):  # procMount_restricted, 1.35: no user-namespace relaxation
    bad, types = [], set()
    for c in containers(spec):
        value = sc(c).get("procMount")
        if value is not None and value != "Default":
            bad.append(c.get("name"))
            types.add(value)
    if bad:
        return "procMount", f'{plural("container", "containers", len(bad))} {quote(bad)} must not set securityContext.procMount to {quote(sorted(types))}'
    return None


CHECKS = [
    host_namespaces, privileged, host_ports, app_armor, se_linux, sysctls, windows_host_process,
    host_probes_and_lifecycle,
    restricted_volumes, allow_privilege_escalation, run_as_non_root, run_as_user, seccomp_profile,
    capabilities, proc_mount,
]


def evaluate(obj):
    """The failing checks of one object as (reason, detail) pairs; None when it has no pod."""
    pod = pod_of(obj)
    if pod is None:
        return None
    meta, spec = pod
    return [r for r in (check(meta, spec) for check in CHECKS) if r is not None]


def load(path):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        docs = [d for d in yaml.safe_load_all(stream) if d]
    objects = []
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a document is not an object")
        objects += (d.get("items") or []) if d.get("kind", "").endswith("List") else [d]
    return objects


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    checked = violations = 0
    for path in argv:
        try:
            objects = load(path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for obj in objects:
            failed = evaluate(obj)
            if failed is None:
                continue
            checked += 1
            meta = obj.get("metadata") or {}
            who = f'{obj.get("kind")} {meta.get("namespace", "")}/{meta.get("name") or meta.get("generateName", "")}'
            for reason, detail in failed:
                violations += 1
                print(f"{who}: {reason} ({detail})")
    print(f"pss_restricted: {checked} pod-bearing objects, {violations} violations of restricted:latest", file=sys.stderr)
    if checked == 0:
        print("error: no pod-bearing object in the input", file=sys.stderr)
        return 2
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
