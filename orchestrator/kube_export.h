// `msb export kubernetes`: a Sandboxfile's model as Kubernetes objects whose
// pods run in Kata Containers microVMs (runtimeClassName). Pure: no I/O, no
// clock, no store; the CLI writes what this returns (cli/cmd_export.cc).
// Not a cluster client: nothing here talks to a Kubernetes API.
//
// Per sandbox, in this order (docs/kubernetes.md has the full mapping):
//   Deployment, or StatefulSet when it mounts named volumes (one
//     volumeClaimTemplate per volume, sized from `volumes:`);
//   Service <sandbox>: headless (clusterIP: None), so that the sandbox's name
//     resolves to its pod on every port, as the group does under `msb up`;
//   Service <sandbox>-published: the published ports, of --publish-as type;
//   NetworkPolicy <sandbox>: the profile, the rules it can express, ingress;
//   CiliumNetworkPolicy <sandbox>-fqdn: host-name rules (--fqdn-policy cilium).
// Every object carries app.kubernetes.io/part-of: <project>,
// app.kubernetes.io/name: <sandbox> and msb.dev/config-hash (the hash
// `msb config --hash` prints). What Kubernetes cannot say the way msb
// enforces it is a warning, never dropped in silence; secret values are
// never read.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "schema/model.h"

namespace msb::orchestrator {

inline constexpr const char* kConfigHashAnnotation = "msb.dev/config-hash";
inline constexpr const char* kPartOfLabel = "app.kubernetes.io/part-of";
inline constexpr const char* kNameLabel = "app.kubernetes.io/name";
inline constexpr const char* kDefaultRuntimeClass = "kata-qemu";

enum class PublishAs : int { kClusterIp = 0, kNodePort = 1, kLoadBalancer = 2 };
const char* ToString(PublishAs publish);  // "clusterip", "nodeport", "loadbalancer"

enum class FqdnPolicy : int { kComment = 0, kCilium = 1 };
const char* ToString(FqdnPolicy policy);  // "comment", "cilium"

struct KubeExportOptions {
  std::string runtime_class = kDefaultRuntimeClass;
  std::string name_space;  // empty: objects carry no namespace (kubectl's current one)
  PublishAs publish_as = PublishAs::kClusterIp;
  FqdnPolicy fqdn_policy = FqdnPolicy::kComment;
  bool allow_host_path = false;  // bind mounts become hostPath volumes; else an error
};

struct KubeObject {
  std::string kind;  // "Deployment", "StatefulSet", "Service", ...
  std::string name;
  std::string sandbox;
  std::vector<std::string> comments;  // lines written as '# ' comments before the document
  nlohmann::json body;                // the object (nlohmann's objects keep keys sorted)
  // "<kind, lower case>-<name>.yaml": what -o DIR writes it to.
  std::string FileName() const;
};

struct KubeExport {
  std::vector<KubeObject> objects;  // by sandbox name, then the order above
  // "sandbox web: ...", sorted by sandbox, then in the order found.
  std::vector<std::string> warnings;
};

// The objects of every sandbox of project. Errors (kInvalidArgument), all at
// once: a bind mount without allow_host_path (naming each, with its place
// in the file), a name Kubernetes does not accept (sandbox, volume, secret,
// namespace, runtime class).
Result<KubeExport> ExportKubernetes(const schema::Project& project, const KubeExportOptions& options);

// One object as a YAML document (its comments first), ending in a newline;
// strings that would read back as another type are quoted.
std::string KubeYaml(const KubeObject& object);
// Every object, each document starting with "---".
std::string KubeYamlStream(const KubeExport& exported);

// The ipBlocks standing for the `public` group and profile: 0.0.0.0/0 and
// ::/0, each except every range of net/address.h's SpecialRanges() of its
// family, and (IPv6) every prefix that embeds an IPv4 address.
nlohmann::json PublicIpBlocks();

}  // namespace msb::orchestrator
