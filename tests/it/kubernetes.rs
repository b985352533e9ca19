//! The Kubernetes manifests (`deploy/kubernetes/`), resolved as `kubectl apply -k` would for
//! each regional cluster: every object well formed, every ConfigMap, Secret, key, volume,
//! port and Service a workload refers to exists, every file the fleet configuration names is
//! mounted in the pods that read it, and that configuration is valid.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::*;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// A cluster's objects after resolving `resources` and generators (no other transformers are
/// used by the manifests).
#[derive(Default)]
struct Cluster {
    docs: Vec<Value>,
    /// ConfigMaps and Secrets by name, with their keys.
    config_maps: BTreeMap<String, BTreeSet<String>>,
    secrets: BTreeMap<String, BTreeSet<String>>,
}

fn kubernetes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn generated(entries: &Value, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for generator in entries.as_sequence().into_iter().flatten() {
        let name = generator["name"]
            .as_str()
            .expect("generator name")
            .to_string();
        let keys = generator["files"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|f| {
                let f = f.as_str().expect("file");
                f.split_once('=').map_or_else(
                    || {
                        Path::new(f)
                            .file_name()
                            .expect("name")
                            .to_string_lossy()
                            .to_string()
                    },
                    |(key, _)| key.to_string(),
                )
            });
        into.entry(name).or_default().extend(keys);
    }
}

fn kustomize(dir: &Path, cluster: &mut Cluster) {
    let text = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let k: Value = serde_yaml::from_str(&text).expect("kustomization");
    // This kustomization's transformers (images) apply to what it and its bases hold, not to
    // what a kustomization that includes it adds.
    let first = cluster.docs.len();
    for resource in k["resources"].as_sequence().expect("resources") {
        let path = dir.join(resource.as_str().expect("resource path"));
        if path.is_dir() {
            kustomize(&path, cluster);
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for key in ["apiVersion", "kind"] {
                assert!(doc[key].is_string(), "{}: no {key}", path.display());
            }
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: no name",
                path.display()
            );
            if doc["kind"] != "Namespace" {
                assert_eq!(
                    doc["metadata"]["namespace"],
                    "vantage",
                    "{}",
                    path.display()
                );
            }
            if doc["kind"] == "ConfigMap" {
                let keys = doc["data"].as_mapping().expect("data").keys();
                cluster
                    .config_maps
                    .entry(doc["metadata"]["name"].as_str().expect("name").into())
                    .or_default()
                    .extend(keys.map(|k| k.as_str().expect("key").to_string()));
            }
            cluster.docs.push(doc);
        }
    }
    generated(&k["configMapGenerator"], &mut cluster.config_maps);
    generated(&k["secretGenerator"], &mut cluster.secrets);
    for image in k["images"].as_sequence().into_iter().flatten() {
        let name = image["name"].as_str().expect("image name");
        let new = format!(
            "{}:{}",
            image["newName"].as_str().unwrap_or(name),
            image["newTag"].as_str().expect("newTag")
        );
        for doc in &mut cluster.docs[first..] {
            let spec = &mut doc["spec"]["template"]["spec"];
            for list in ["containers", "initContainers"] {
                for container in spec[list].as_sequence_mut().into_iter().flatten() {
                    if container["image"].as_str() == Some(name) {
                        container["image"] = Value::String(new.clone());
                    }
                }
            }
        }
    }
}

/// Where `file` comes from in `pod`: the key of the ConfigMap or Secret mounted above it, or
/// a volume claim (a directory). None if nothing is mounted there.
fn source_of(
    cluster: &Cluster,
    pod: &Value,
    claims: &BTreeSet<String>,
    container: &Value,
    file: &str,
) -> Option<String> {
    for mount in container["volumeMounts"].as_sequence()? {
        let at = mount["mountPath"].as_str()?;
        let Some(rest) = file.strip_prefix(at) else {
            continue;
        };
        let rest = rest.trim_start_matches('/');
        let name = mount["name"].as_str()?;
        if claims.contains(name) {
            return Some(format!("volume claim {name}"));
        }
        let volume = pod["volumes"]
            .as_sequence()?
            .iter()
            .find(|v| v["name"] == name)?;
        let (kind, source, keys) = if let Some(cm) = volume["configMap"]["name"].as_str() {
            (
                "ConfigMap",
                &volume["configMap"],
                cluster.config_maps.get(cm)?,
            )
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            ("Secret", &volume["secret"], cluster.secrets.get(secret)?)
        } else {
            continue;
        };
        // With items, a file is an item's path; without, every key is a file.
        let key = match source["items"].as_sequence() {
            Some(items) => items
                .iter()
                .find(|i| i["path"] == rest)
                .and_then(|i| i["key"].as_str())
                .map(str::to_string),
            None => keys.contains(rest).then(|| rest.to_string()),
        };
        if let Some(key) = key.filter(|k| keys.contains(k) || rest.is_empty()) {
            return Some(format!("{kind} key {key}"));
        }
        if rest.is_empty() {
            return Some(format!("{kind} {name}"));
        }
    }
    None
}

#[test]
fn every_cluster_s_manifests_hold_together() {
    let fleet_text = {
        let text = std::fs::read_to_string(kubernetes().join("base/config.yaml")).expect("config");
        let doc: Value = serde_yaml::from_str(&text).expect("config map");
        doc["data"]["fleet.toml"]
            .as_str()
            .expect("fleet.toml")
            .to_string()
    };
    let fleet: toml::Table = toml::from_str(&fleet_text).expect("fleet toml");
    let probers = fleet["prober"].as_array().expect("probers");
    for region in REGIONS {
        let mut cluster = Cluster::default();
        kustomize(&kubernetes().join("clusters").join(region), &mut cluster);
        let workloads: Vec<&Value> = cluster
            .docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
            .collect();
        let services: Vec<&Value> = cluster
            .docs
            .iter()
            .filter(|d| d["kind"] == "Service")
            .collect();
        let mut roles = BTreeSet::new();
        for workload in &workloads {
            let name = workload["metadata"]["name"].as_str().expect("name");
            let what = format!("{region}: {name}");
            let template = &workload["spec"]["template"];
            let labels = template["metadata"]["labels"].as_mapping().expect("labels");
            for (k, v) in workload["spec"]["selector"]["matchLabels"]
                .as_mapping()
                .expect("selector")
            {
                assert_eq!(
                    labels.get(k),
                    Some(v),
                    "{what}: the selector matches the pods"
                );
            }
            let pod = &template["spec"];
            let claims: BTreeSet<String> = workload["spec"]["volumeClaimTemplates"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|c| c["metadata"]["name"].as_str().expect("claim").to_string())
                .collect();
            if workload["kind"] == "StatefulSet" {
                let service = workload["spec"]["serviceName"]
                    .as_str()
                    .expect("serviceName");
                assert!(
                    services
                        .iter()
                        .any(|s| s["metadata"]["name"] == service
                            && s["spec"]["clusterIP"] == "None"),
                    "{what}: its headless Service {service}"
                );
            }
            for volume in pod["volumes"].as_sequence().expect("volumes") {
                if let Some(cm) = volume["configMap"]["name"].as_str() {
                    let keys = cluster
                        .config_maps
                        .get(cm)
                        .unwrap_or_else(|| panic!("{what}: no ConfigMap {cm}"));
                    for item in volume["configMap"]["items"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                    {
                        assert!(
                            keys.contains(item["key"].as_str().expect("key")),
                            "{what}: {cm} has no {:?}",
                            item["key"]
                        );
                    }
                }
                if let Some(secret) = volume["secret"]["secretName"].as_str() {
                    assert!(
                        cluster.secrets.contains_key(secret),
                        "{what}: no Secret {secret}"
                    );
                }
            }
            let containers = pod["containers"].as_sequence().expect("containers");
            for container in containers {
                let image = container["image"].as_str().expect("image");
                assert!(
                    image.contains('/') && image.contains(':'),
                    "{what}: image {image:?} is not set by a kustomization's images (it would be pulled from Docker Hub)"
                );
                let ports: BTreeSet<&str> = container["ports"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                for probe in ["livenessProbe", "readinessProbe"] {
                    let p = &container[probe];
                    if let Some(port) = p["httpGet"]["port"]
                        .as_str()
                        .or(p["tcpSocket"]["port"].as_str())
                    {
                        assert!(ports.contains(port), "{what}: {probe} port {port}");
                    }
                }
                for mount in container["volumeMounts"].as_sequence().expect("mounts") {
                    let name = mount["name"].as_str().expect("mount");
                    assert!(
                        claims.contains(name)
                            || pod["volumes"]
                                .as_sequence()
                                .expect("volumes")
                                .iter()
                                .any(|v| v["name"] == name),
                        "{what}: mount {name} has no volume"
                    );
                }
                // The configuration file, and every file it names that this role reads.
                let args: Vec<&str> = container["args"]
                    .as_sequence()
                    .expect("args")
                    .iter()
                    .filter_map(|a| a.as_str())
                    .collect();
                let role = args
                    .iter()
                    .find(|a| ["dns", "probe", "route53"].contains(a))
                    .expect("a role");
                roles.insert(role.to_string());
                let config = args[args
                    .iter()
                    .position(|a| *a == "--config")
                    .expect("--config")
                    + 1];
                let mut files = vec![
                    config.to_string(),
                    fleet["cluster"]["token_file"]
                        .as_str()
                        .expect("token")
                        .to_string(),
                ];
                for prober in probers {
                    files.push(prober["tls_cert_file"].as_str().expect("cert").to_string());
                }
                // The fleet's etcd (overrides, membership, leader election): the DNS servers
                // and the reconciler read its credentials; a prober never does.
                if *role != "probe" {
                    for key in ["ca_file", "cert_file", "key_file"] {
                        if let Some(file) = fleet["state"][key].as_str() {
                            files.push(file.to_string());
                        }
                    }
                }
                match *role {
                    "dns" => {
                        files.push(
                            fleet["admin"]["token_file"]
                                .as_str()
                                .expect("admin token")
                                .into(),
                        );
                        files.push(fleet["admin"]["state_dir"].as_str().expect("state").into());
                        files.push(format!(
                            "{}/example.com.zone",
                            fleet["dns"]["zones_dir"].as_str().expect("zones")
                        ));
                    }
                    "route53" => {
                        files.push(fleet["admin"]["state_dir"].as_str().expect("state").into())
                    }
                    _ => {
                        let prober = probers
                            .iter()
                            .find(|p| p["region"].as_str() == Some(region))
                            .expect("this region's prober");
                        assert!(
                            args.contains(&region),
                            "{what}: the prober runs as {region}"
                        );
                        files.push(prober["key_file"].as_str().expect("key").into());
                        files.push(prober["tls_key_file"].as_str().expect("tls key").into());
                        assert!(
                            prober["url"]
                                .as_str()
                                .expect("url")
                                .contains(&format!("probe.{region}.")),
                            "{what}: the url names this cluster's prober"
                        );
                    }
                }
                for file in files {
                    assert!(
                        source_of(&cluster, pod, &claims, container, &file).is_some(),
                        "{what}: {file} (named by the configuration) is not mounted"
                    );
                }
            }
        }
        for service in &services {
            let name = service["metadata"]["name"].as_str().expect("name");
            let selector = service["spec"]["selector"].as_mapping().expect("selector");
            let target = workloads
                .iter()
                .find(|w| {
                    let labels = w["spec"]["template"]["metadata"]["labels"]
                        .as_mapping()
                        .expect("labels");
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .unwrap_or_else(|| panic!("{region}: Service {name} selects no pods"));
            let ports: BTreeSet<&str> = target["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .expect("containers")
                .iter()
                .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
                .filter_map(|p| p["name"].as_str())
                .collect();
            for port in service["spec"]["ports"].as_sequence().expect("ports") {
                let target_port = port["targetPort"].as_str().expect("named targetPort");
                assert!(
                    ports.contains(target_port),
                    "{region}: Service {name} port {target_port}"
                );
            }
        }
        // Each cluster: its DNS servers and its own region's prober; one reconciler fleet-wide.
        assert!(
            roles.contains("dns") && roles.contains("probe"),
            "{region}: {roles:?}"
        );
        assert_eq!(
            roles.contains("route53"),
            region == "us-east",
            "{region}: {roles:?}"
        );
        assert!(
            services
                .iter()
                .any(|s| s["metadata"]["name"] == "vantage-dns-admin"),
            "{region}: an admin Service"
        );
    }
}

#[test]
fn the_kubernetes_fleet_configuration_is_valid() {
    let text = std::fs::read_to_string(kubernetes().join("base/config.yaml")).expect("config");
    let doc: Value = serde_yaml::from_str(&text).expect("config map");
    let mut fleet = doc["data"]["fleet.toml"]
        .as_str()
        .expect("fleet.toml")
        .to_string();
    let dir = workdir();
    // The prober identities as the kustomization comments say to write them.
    let keys = dir.path().join("prober-certs");
    let example_keys: Vec<String> = fleet
        .lines()
        .filter_map(|l| l.trim().strip_prefix("public_key = "))
        .map(str::to_string)
        .collect();
    assert_eq!(example_keys.len(), 3);
    for (region, example) in REGIONS.iter().zip(&example_keys) {
        let name = format!("probe.{region}.example.net");
        let key = keygen_public_key(&keys, region, &name);
        fleet = fleet.replace(example, &key);
    }
    std::fs::create_dir_all(dir.path().join("secret")).expect("dir");
    for file in ["token", "admin-token"] {
        std::fs::write(
            dir.path().join("secret").join(file),
            "0123456789abcdef0123456789abcdef",
        )
        .expect("token");
    }
    std::fs::create_dir_all(dir.path().join("etcd")).expect("dir");
    for file in ["ca.crt", "client.crt", "client.key"] {
        std::fs::write(dir.path().join("etcd").join(file), "PEM").expect("etcd file");
    }
    let fleet = fleet.replace("/etc/vantage/", &format!("{}/", dir.path().display()));
    let settings = vantage::config::Settings::from_toml(&fleet, "configmap fleet.toml", dir.path())
        .expect("the ConfigMap's fleet.toml validates");
    assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
}
