// Tests for the per-field rules of the loader: each rule has a file that
// fails (the whole message asserted, with line and column) and one that passes.
#include <gtest/gtest.h>

#include "schema/sandboxfile.h"
#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using testing::Errors;
using testing::MustParse;
using testing::ParseText;
using testing::Web;
using testing::Parsed;

TEST(LoaderTest, MinimalFileGetsEveryDefault) {
  Project p = MustParse(Web(""));
  EXPECT_EQ(p.name, "proj");  // the directory's name
  EXPECT_EQ(p.source_path, "/proj/Sandboxfile");
  ASSERT_EQ(p.sandboxes.count("web"), 1u);
  const Sandbox& sb = p.sandboxes.at("web");
  EXPECT_EQ(sb.image.reference, "docker.io/library/alpine:latest");
  EXPECT_EQ(sb.cpus, 1);
  EXPECT_EQ(sb.memory, 512 * kMiB);
  EXPECT_EQ(sb.disk, 2 * kGiB);
  EXPECT_EQ(sb.shell, "/bin/sh");
  EXPECT_EQ(sb.restart.policy, Restart::Policy::kNo);
  EXPECT_EQ(sb.network.policy, NetworkPolicy::kPublic);
  EXPECT_TRUE(sb.network.rebind_protection);
  EXPECT_TRUE(sb.command.empty());
  EXPECT_FALSE(sb.healthcheck.has_value());
}

TEST(LoaderTest, UnknownKeySuggestsTheClosestOne) {
  EXPECT_EQ(Errors(Web("    memroy: 1G\n")),
            "Sandboxfile:4:5: sandboxes.web.memroy: unknown key; did you mean \"memory\"?\n");
  EXPECT_EQ(Errors(Web("    environment: {A: b}\n")),
            "Sandboxfile:4:5: sandboxes.web.environment: unknown key; did you mean \"envs\"?\n");
  EXPECT_EQ(Errors("sandboxs: {}\n"),
            "Sandboxfile:1:1: sandboxs: unknown key; did you mean \"sandboxes\"?\n");
  EXPECT_EQ(Errors(Web("    network: {polcy: none}\n")),
            "Sandboxfile:4:15: sandboxes.web.network.polcy: unknown key; did you mean \"policy\"?\n");
  EXPECT_EQ(Errors(Web("    healthcheck: {command: x, zzz: 1}\n")),
            "Sandboxfile:4:31: sandboxes.web.healthcheck.zzz: unknown key (expected one of: command, "
            "interval, timeout, retries, start_period)\n");
  MustParse(Web("    memory: 1G\n"));
}

TEST(LoaderTest, ExtensionKeysAtTheTopAreIgnored) {
  MustParse("x-common: &c {cpus: 2}\n" + Web(""));
  EXPECT_EQ(Errors(Web("    x-note: hi\n")), "Sandboxfile:4:5: sandboxes.web.x-note: unknown key\n");
}

TEST(LoaderTest, DuplicateKeysAreErrors) {
  EXPECT_EQ(Errors(Web("    cpus: 1\n    cpus: 2\n")),
            "Sandboxfile:5:5: sandboxes.web.cpus: duplicate key (first at line 4)\n");
  EXPECT_EQ(Errors(Web("    envs:\n      A: 1\n      A: 2\n")),
            "Sandboxfile:6:7: sandboxes.web.envs.A: duplicate key (first at line 5)\n");
}

TEST(LoaderTest, WrongTypesSayWhatWasExpected) {
  EXPECT_EQ(Errors(Web("    cpus: [2]\n")),
            "Sandboxfile:4:11: sandboxes.web.cpus: expected an integer, got a list\n");
  EXPECT_EQ(Errors(Web("    cpus: two\n")),
            "Sandboxfile:4:11: sandboxes.web.cpus: expected an integer from 1 to 128, got \"two\"\n");
  EXPECT_EQ(Errors(Web("    cpus: 0\n")),
            "Sandboxfile:4:11: sandboxes.web.cpus: expected an integer from 1 to 128, got \"0\"\n");
  EXPECT_EQ(Errors(Web("    ports: 8080:80\n")),
            "Sandboxfile:4:12: sandboxes.web.ports: expected a list, got a string\n");
  EXPECT_EQ(Errors(Web("    image:\n")),
            "Sandboxfile:4:5: sandboxes.web.image: duplicate key (first at line 3)\n");
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    image:\n"),
            "Sandboxfile:3:5: sandboxes.web.image: expected an image reference or directory, got nothing (null)\n");
  EXPECT_EQ(Errors("sandboxes:\n  web: alpine\n"),
            "Sandboxfile:2:8: sandboxes.web: expected a map with image, memory, ... , got a string\n");
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    cpus: 1\n"),
            "Sandboxfile:2:3: sandboxes.web: missing required key \"image\"\n");
  EXPECT_EQ(Errors(Web("    command: {a: b}\n")),
            "Sandboxfile:4:14: sandboxes.web.command: expected a command: a list of strings, or a string run "
            "by `shell -c`, got a map\n");
  EXPECT_EQ(Errors(Web("    command: []\n")), "Sandboxfile:4:14: sandboxes.web.command: the command is empty\n");
  EXPECT_EQ(Errors(Web("    ? [a]\n    : b\n")),
            "Sandboxfile:4:7: sandboxes.web: keys must be strings, got a list\n");
}

TEST(LoaderTest, BooleansAreYaml12Only) {
  EXPECT_EQ(Errors(Web("    ephemeral: yes\n")),
            "Sandboxfile:4:16: sandboxes.web.ephemeral: \"yes\" is a YAML 1.1 boolean; Sandboxfiles are "
            "YAML 1.2: write true or false\n");
  EXPECT_EQ(Errors(Web("    network: {dns: {rebind_protection: off}}\n")),
            "Sandboxfile:4:40: sandboxes.web.network.dns.rebind_protection: \"off\" is a YAML 1.1 boolean; "
            "Sandboxfiles are YAML 1.2: write true or false\n");
  EXPECT_EQ(Errors(Web("    ephemeral: 1\n")),
            "Sandboxfile:4:16: sandboxes.web.ephemeral: expected true or false, got \"1\"\n");
  EXPECT_TRUE(MustParse(Web("    ephemeral: true\n")).sandboxes["web"].ephemeral);
  EXPECT_FALSE(MustParse(Web("    ephemeral: False\n")).sandboxes["web"].ephemeral);
  // A string field keeps YAML 1.2's reading of no: the string "no".
  EXPECT_EQ(MustParse(Web("    envs: {DEBUG: no}\n")).sandboxes["web"].envs["DEBUG"], "no");
}

TEST(LoaderTest, SizesAndMemory) {
  EXPECT_EQ(MustParse(Web("    memory: 1024\n")).sandboxes["web"].memory, kGiB);  // legacy MiB
  EXPECT_EQ(MustParse(Web("    memory: 1.5G\n")).sandboxes["web"].memory, 1536 * kMiB);
  EXPECT_EQ(MustParse(Web("    disk: 4294967296\n")).sandboxes["web"].disk, 4 * kGiB);
  EXPECT_EQ(Errors(Web("    memory: 100.5\n")),
            "Sandboxfile:4:13: sandboxes.web.memory: memory must be a whole number of MiB\n");
  EXPECT_EQ(Errors(Web("    memory: 100.0000001\n")),
            "Sandboxfile:4:13: sandboxes.web.memory: size \"100.0000001\" is not a whole number of bytes\n");
  EXPECT_EQ(Errors(Web("    memory: 1000000K\n")),
            "Sandboxfile:4:13: sandboxes.web.memory: memory must be a whole number of MiB\n");
  EXPECT_EQ(Errors(Web("    memory: 16\n")),
            "Sandboxfile:4:13: sandboxes.web.memory: expected at least 32M, got \"16\"\n");
  EXPECT_EQ(Errors(Web("    disk: 4096\n")),
            "Sandboxfile:4:11: sandboxes.web.disk: expected at least 64M, got \"4096\" (a plain number "
            "counts bytes; did you mean 4096M?)\n");
  EXPECT_EQ(Errors(Web("    disk: big\n")),
            "Sandboxfile:4:11: sandboxes.web.disk: expected a size like 512M, 1G, 1.5G or a number of bytes, got \"big\"\n");
  EXPECT_EQ(Errors("sandboxes: {}\nvolumes:\n  v: {size: 1K}\n"),
            "Sandboxfile:3:13: volumes.v.size: expected at least 16M, got \"1K\"\n");
}

TEST(LoaderTest, Durations) {
  Project p = MustParse(Web("    healthcheck:\n      command: [\"true\"]\n      interval: 1m30s\n"
                            "      timeout: 500ms\n      start_period: 0s\n      retries: 5\n"));
  const Healthcheck& hc = *p.sandboxes["web"].healthcheck;
  EXPECT_EQ(hc.interval_ms, 90'000);
  EXPECT_EQ(hc.timeout_ms, 500);
  EXPECT_EQ(hc.start_period_ms, 0);
  EXPECT_EQ(hc.retries, 5);
  EXPECT_EQ(Errors(Web("    healthcheck: {command: x, interval: 5}\n")),
            "Sandboxfile:4:41: sandboxes.web.healthcheck.interval: expected a duration like 5s, 1m30s or "
            "500ms (a unit is required), got \"5\"\n");
  EXPECT_EQ(Errors(Web("    healthcheck: {command: x, timeout: 0s}\n")),
            "Sandboxfile:4:40: sandboxes.web.healthcheck.timeout: expected at least 1ms, got \"0s\"\n");
  EXPECT_EQ(Errors(Web("    healthcheck: {interval: 5s}\n")),
            "Sandboxfile:4:18: sandboxes.web.healthcheck: missing required key \"command\"\n");
}

TEST(LoaderTest, HealthcheckDefaultsAndShellCommands) {
  Project p = MustParse(Web("    shell: /bin/bash\n    healthcheck: {command: test -f /ok}\n"));
  const Healthcheck& hc = *p.sandboxes["web"].healthcheck;
  EXPECT_EQ(hc.command, (std::vector<std::string>{"/bin/bash", "-c", "test -f /ok"}));
  EXPECT_EQ(hc.interval_ms, 10'000);
  EXPECT_EQ(hc.timeout_ms, 5'000);
  EXPECT_EQ(hc.retries, 3);
}

TEST(LoaderTest, RestartValues) {
  EXPECT_EQ(MustParse(Web("    restart: on-failure:5\n")).sandboxes["web"].restart.max_retries, 5);
  EXPECT_EQ(MustParse(Web("    restart: no\n")).sandboxes["web"].restart.policy, Restart::Policy::kNo);
  EXPECT_EQ(Errors(Web("    restart: sometimes\n")),
            "Sandboxfile:4:14: sandboxes.web.restart: expected no, always, on-failure[:N] or unless-stopped, "
            "got \"sometimes\"\n");
}

TEST(LoaderTest, PortsAreCheckedOneByOne) {
  Project p = MustParse(Web("    ports: [\"8080:80\", 0.0.0.0:5353:53/udp, 9000]\n"));
  ASSERT_EQ(p.sandboxes["web"].ports.size(), 3u);
  EXPECT_EQ(p.sandboxes["web"].ports[1].host_ip, "0.0.0.0");
  EXPECT_EQ(Errors(Web("    ports:\n      - 8080:80\n      - 70000:80\n")),
            "Sandboxfile:6:9: sandboxes.web.ports[1]: invalid port mapping \"70000:80\": host port \"70000\" "
            "must be from 1 to 65535 (expected [ip:]host:guest[/tcp|udp])\n");
}

TEST(LoaderTest, GuestPathsMustBeAbsolute) {
  EXPECT_EQ(Errors(Web("    workdir: app\n")),
            "Sandboxfile:4:14: sandboxes.web.workdir: guest path \"app\" must be absolute (start with /)\n");
  EXPECT_EQ(Errors(Web("    volumes: [\"./src:src\"]\n")),
            "Sandboxfile:4:15: sandboxes.web.volumes[0]: invalid volume \"./src:src\": guest path \"src\" must "
            "be absolute (start with /) (expected HOST_PATH:GUEST_PATH[:ro|rw] or VOLUME:GUEST_PATH[:ro|rw])\n");
  EXPECT_EQ(Errors(Web("    tmpfs: [tmp]\n")),
            "Sandboxfile:4:13: sandboxes.web.tmpfs[0]: invalid tmpfs \"tmp\": guest path \"tmp\" must be "
            "absolute (start with /) (expected GUEST_PATH[:size=SIZE][,mode=OCTAL])\n");
  Project p = MustParse(Web("    workdir: /app/\n    volumes: [\"./src:/app/src:ro\"]\n    tmpfs: [/tmp]\n"));
  const Sandbox& sb = p.sandboxes["web"];
  EXPECT_EQ(sb.workdir, "/app");
  ASSERT_EQ(sb.volumes.size(), 1u);
  EXPECT_EQ(sb.volumes[0].source, "/proj/src");
  EXPECT_TRUE(sb.volumes[0].read_only);
  ASSERT_EQ(sb.tmpfs.size(), 1u);
  EXPECT_EQ(sb.tmpfs[0].size, 256 * kMiB);  // half the default memory
}

TEST(LoaderTest, TwoMountsOnOneGuestPath) {
  EXPECT_EQ(Errors(Web("    volumes: [\"./a:/data\"]\n    tmpfs: [/data/]\n")),
            "Sandboxfile:5:13: sandboxes.web.tmpfs[0]: guest path /data is already mounted by "
            "sandboxes.web.volumes[0]\n");
  MustParse(Web("    volumes: [\"./a:/data\"]\n    tmpfs: [/data/tmp]\n"));
}

TEST(LoaderTest, DeviceLimitOfTheMicroVm) {
  auto file = [](int mounts) {
    std::string body = "    volumes:\n";
    for (int i = 0; i < mounts; ++i) body += "      - ./d" + std::to_string(i) + ":/m" + std::to_string(i) + "\n";
    return Web(body);
  };
  MustParse(file(19));
  EXPECT_EQ(Errors(file(20)),
            "Sandboxfile:5:7: sandboxes.web.volumes: 20 volumes and bind mounts exceed the microVM limit of 19 "
            "(24 virtio-mmio devices, 5 used by msb)\n");
}

TEST(LoaderTest, NamesFollowTheRule) {
  EXPECT_EQ(Errors("name: My_Shop\nsandboxes: {}\n"),
            "Sandboxfile:1:7: name: invalid project name \"My_Shop\": use 1 to 63 characters from a-z, 0-9, '_' "
            "and '-', starting with a letter or digit\n");
  EXPECT_EQ(Errors("sandboxes:\n  Web:\n    image: alpine\n"),
            "Sandboxfile:2:3: sandboxes.Web: invalid sandbox name \"Web\": use 1 to 63 characters from a-z, 0-9, "
            "'_' and '-', starting with a letter or digit\n");
  EXPECT_EQ(Errors("sandboxes: {}\nvolumes:\n  _v: {}\n"),
            "Sandboxfile:3:3: volumes._v: invalid volume name \"_v\": use 1 to 63 characters from a-z, 0-9, '_' "
            "and '-', starting with a letter or digit\n");
  EXPECT_EQ(MustParse("name: shop-2\nsandboxes: {}\nvolumes: {v_1: {}}\n").name, "shop-2");
}

TEST(LoaderTest, NameFromFileSaysWhetherTheFileNamedTheProject) {
  EXPECT_FALSE(MustParse(Web("")).name_from_file);
  // Even a name: equal to the directory's is the file's own.
  EXPECT_TRUE(MustParse("name: proj\nsandboxes: {}\n").name_from_file);
  EXPECT_TRUE(MustParse("name: shop\nsandboxes: {}\n").name_from_file);
}

TEST(LoaderTest, EnvsAsListOrMap) {
  EXPECT_EQ(MustParse(Web("    envs: [A=1, B=x=y, C=]\n")).sandboxes["web"].envs,
            (std::map<std::string, std::string>{{"A", "1"}, {"B", "x=y"}, {"C", ""}}));
  EXPECT_EQ(MustParse(Web("    envs: {A: 1, B: true}\n")).sandboxes["web"].envs,
            (std::map<std::string, std::string>{{"A", "1"}, {"B", "true"}}));
  EXPECT_EQ(Errors(Web("    envs: [A]\n")), "Sandboxfile:4:12: sandboxes.web.envs[0]: expected KEY=VALUE, got \"A\"\n");
  EXPECT_EQ(Errors(Web("    envs: [A=1, A=2]\n")), "Sandboxfile:4:17: sandboxes.web.envs[1]: variable A is set twice\n");
  EXPECT_EQ(Errors(Web("    envs: {1A: x}\n")),
            "Sandboxfile:4:16: sandboxes.web.envs.1A: invalid variable name \"1A\" (letters, digits and '_', not "
            "starting with a digit)\n");
  EXPECT_EQ(Errors(Web("    envs: {A: }\n")),
            "Sandboxfile:4:12: sandboxes.web.envs.A: expected a string value (write \"\" for an empty one), got "
            "nothing (null)\n");
}

TEST(LoaderTest, CommandsScriptsAndTheStartScript) {
  Project p = MustParse(Web("    scripts:\n      start: python app.py\n      migrate: [alembic, upgrade]\n"));
  const Sandbox& sb = p.sandboxes["web"];
  EXPECT_EQ(sb.command, (std::vector<std::string>{"/bin/sh", "-c", "python app.py"}));
  EXPECT_EQ(sb.scripts.at("migrate"), (std::vector<std::string>{"alembic", "upgrade"}));
  p = MustParse(Web("    command: [\"a\", \"b\"]\n    scripts: {start: c}\n"));
  EXPECT_EQ(p.sandboxes["web"].command, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Errors(Web("    scripts: {\"bad name\": x}\n")),
            "Sandboxfile:4:15: sandboxes.web.scripts.bad name: script names are letters, digits, '_', '.' and '-'\n");
}

TEST(LoaderTest, UserMustBeUidGidOrName) {
  EXPECT_EQ(MustParse(Web("    user: \"1000:1000\"\n")).sandboxes["web"].user, "1000:1000");
  EXPECT_EQ(MustParse(Web("    user: 1000\n")).sandboxes["web"].user, "1000");
  EXPECT_EQ(Errors(Web("    user: \"a b\"\n")),
            "Sandboxfile:4:11: sandboxes.web.user: expected uid[:gid] or name[:group], got \"a b\"\n");
  EXPECT_FALSE(ParseText(Web("    user: \"1:2:3\"\n")).project.has_value());
}

TEST(LoaderTest, SecretsNeedOneSourceAndHosts) {
  Project p = MustParse(Web("    secrets:\n      TOKEN:\n        from_env: GH\n        allow: [api.github.com, \"*.x.org\"]\n"
                            "        inject: {query: true}\n      KEY: {from_file: ./key.txt, allow: [h.example]}\n"));
  const Secret& token = p.sandboxes["web"].secrets.at("TOKEN");
  EXPECT_EQ(token.source, Secret::Source::kEnv);
  EXPECT_EQ(token.from, "GH");
  EXPECT_EQ(token.allow, (std::vector<std::string>{"api.github.com", "*.x.org"}));
  EXPECT_TRUE(token.inject_headers);
  EXPECT_TRUE(token.inject_query);
  EXPECT_FALSE(token.inject_body);
  EXPECT_EQ(p.sandboxes["web"].secrets.at("KEY").from, "/proj/key.txt");

  EXPECT_EQ(Errors(Web("    secrets:\n      T: {from_env: A, allow: []}\n")),
            "Sandboxfile:5:31: sandboxes.web.secrets.T.allow: the allow list is empty: name the hosts this "
            "secret may be sent to\n");
  EXPECT_EQ(Errors(Web("    secrets:\n      T: {from_env: A, from_file: f, allow: [h.com]}\n")),
            "Sandboxfile:5:10: sandboxes.web.secrets.T: needs exactly one of from_env and from_file\n");
  EXPECT_EQ(Errors(Web("    secrets:\n      T: {allow: [h.com]}\n")),
            "Sandboxfile:5:10: sandboxes.web.secrets.T: needs exactly one of from_env and from_file\n");
  EXPECT_EQ(Errors(Web("    secrets:\n      T: {from_env: A}\n")),
            "Sandboxfile:5:10: sandboxes.web.secrets.T: missing required key \"allow\" (the hosts this secret may "
            "be sent to)\n");
  EXPECT_EQ(Errors(Web("    secrets:\n      T: {from_env: A, allow: [\"not a host\"]}\n")),
            "Sandboxfile:5:31: sandboxes.web.secrets.T.allow: \"not a host\" is not a host name or *.domain\n");
  EXPECT_EQ(Errors(Web("    envs: {T: x}\n    secrets:\n      T: {from_env: A, allow: [h.com]}\n")),
            "Sandboxfile:6:7: sandboxes.web.secrets.T: variable T is both a secret and in envs; keep one\n");
}

TEST(LoaderTest, SecretHostsMustBeReachable) {
  auto net = [](const std::string& policy, const std::string& rules) {
    return "    network: {policy: " + policy + ", rules: [" + rules + "]}\n"
           "    secrets:\n      T: {from_env: A, allow: [api.example.com, \"*.corp.example\"]}\n";
  };
  // public and any reach public names; none and group need a rule.
  MustParse(Web(net("public", "")));
  MustParse(Web(net("any", "")));
  MustParse(Web(net("none", "\"allow@api.example.com:tcp:443\", \"allow@*.example:tcp:443\"")));
  MustParse(Web(net("group", "\"allow@10.77.0.0/16:tcp:443\"")));
  std::string none = Errors(Web(net("none", "\"allow@api.example.com:tcp:80\"")));
  EXPECT_NE(none.find("secret T may go to api.example.com, but network policy none and its rules never let "
                      "the sandbox reach it over HTTPS: add a rule such as allow@api.example.com:tcp:443"),
            std::string::npos) << none;
  EXPECT_NE(none.find("*.corp.example"), std::string::npos) << none;
  // A deny rule naming the host, first, wins over the profile.
  std::string denied = Errors(Web(net("public", "\"deny@api.example.com\"")));
  EXPECT_NE(denied.find("may go to api.example.com"), std::string::npos) << denied;
  EXPECT_EQ(denied.find("corp.example"), std::string::npos) << denied;
}

TEST(LoaderTest, NetworkTlsCaIsAHostPathAndInTheHashOnlyWhenSet) {
  Project p = MustParse(Web("    network: {tls: {ca: ./ca.pem}}\n"));
  EXPECT_EQ(p.sandboxes["web"].network.tls_ca, "/proj/ca.pem");
  EXPECT_NE(Errors(Web("    network: {tls: {ca: \"\"}}\n")).find("the path is empty"), std::string::npos);
  EXPECT_NE(Errors(Web("    network: {tls: {crt: x}}\n")).find("crt"), std::string::npos);
  Project plain = MustParse(Web(""));
  EXPECT_FALSE(CanonicalJson(plain.sandboxes["web"])["network"].contains("tls"));
  EXPECT_NE(ConfigHash(p.sandboxes["web"]), ConfigHash(plain.sandboxes["web"]));
}

TEST(LoaderTest, NetworkSectionAndLegacyScope) {
  Project p = MustParse(Web("    network:\n      policy: none\n      rules: [\"allow@api.github.com:tcp:443\"]\n"
                            "      dns: {servers: [1.1.1.1, \"2606:4700::1111\"], rebind_protection: false}\n"));
  const Network& n = p.sandboxes["web"].network;
  EXPECT_EQ(n.policy, NetworkPolicy::kNone);
  ASSERT_EQ(n.rules.size(), 1u);
  EXPECT_EQ(n.dns_servers, (std::vector<std::string>{"1.1.1.1", "2606:4700::1111"}));
  EXPECT_FALSE(n.rebind_protection);
  EXPECT_EQ(MustParse(Web("    scope: group\n")).sandboxes["web"].network.policy, NetworkPolicy::kGroup);
  MustParse(Web("    scope: any\n    network: {policy: any}\n"));
  EXPECT_EQ(Errors(Web("    scope: any\n    network: {policy: none}\n")),
            "Sandboxfile:5:23: sandboxes.web.network.policy: network.policy none disagrees with scope any (scope "
            "is the legacy spelling; keep one)\n");
  EXPECT_EQ(Errors(Web("    scope: pubic\n")),
            "Sandboxfile:4:12: sandboxes.web.scope: expected none, group, public or any, got \"pubic\"; did you "
            "mean \"public\"?\n");
  EXPECT_EQ(Errors(Web("    network: {dns: {servers: [dns.google]}}\n")),
            "Sandboxfile:4:31: sandboxes.web.network.dns.servers[0]: expected an IP address with an optional "
            "port (1.1.1.1, 10.0.0.2:5353, [2606:4700::1111]:53), got \"dns.google\"\n");
  EXPECT_EQ(Errors(Web("    network: {dns: {servers: [\"10.0.0.2:99999\"]}}\n")),
            "Sandboxfile:4:31: sandboxes.web.network.dns.servers[0]: expected an IP address with an optional "
            "port (1.1.1.1, 10.0.0.2:5353, [2606:4700::1111]:53), got \"10.0.0.2:99999\"\n");
}

TEST(LoaderTest, DnsServersTakeAPort) {
  Project p = MustParse(Web("    network: {dns: {servers: [\"127.0.0.1:5353\", \"[::1]:5353\", \"10.0.0.1:53\", "
                            "\"[2606:4700::1111]:53\"]}}\n"));
  EXPECT_EQ(p.sandboxes["web"].network.dns_servers,
            (std::vector<std::string>{"127.0.0.1:5353", "[::1]:5353", "10.0.0.1", "2606:4700::1111"}));
}

TEST(LoaderTest, NetworkRulesSayWhichPartIsWrong) {
  EXPECT_EQ(Errors(Web("    network:\n      rules:\n        - allow@api.github.com:tcp:443\n"
                       "        - alow@x.com\n        - allow@x.com:tcp:99999\n")),
            "Sandboxfile:7:11: sandboxes.web.network.rules[1]: invalid rule \"alow@x.com\": action \"alow\" must "
            "be allow or deny; did you mean \"allow\"? (expected <action>[:<direction>]@<target>[:<proto>[:<ports>]])\n"
            "Sandboxfile:8:11: sandboxes.web.network.rules[2]: invalid rule \"allow@x.com:tcp:99999\": ports "
            "\"99999\" must be a port from 1 to 65535 or a range like 8000-8100 (expected "
            "<action>[:<direction>]@<target>[:<proto>[:<ports>]])\n");
}

TEST(LoaderTest, ImagesAreCheckedAndNormalised) {
  EXPECT_EQ(MustParse(Web("")).sandboxes["web"].image.reference, "docker.io/library/alpine:latest");
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    image: Alpine\n"),
            "Sandboxfile:3:12: sandboxes.web.image: invalid image reference \"Alpine\": repository names are lower "
            "case, got \"Alpine\" (expected name[:tag], name@sha256:<digest>, ./dir, /dir, oci-layout:PATH[:tag] or "
            "snapshot:NAME)\n");
}

TEST(LoaderTest, MergeKeysAndAnchors) {
  Project p = MustParse(
      "x-base: &base\n  image: alpine\n  cpus: 2\n  memory: 1G\n"
      "sandboxes:\n  a:\n    <<: *base\n    cpus: 4\n  b: *base\n");
  EXPECT_EQ(p.sandboxes["a"].cpus, 4);  // explicit keys win over merged ones
  EXPECT_EQ(p.sandboxes["a"].memory, kGiB);
  EXPECT_EQ(p.sandboxes["b"].cpus, 2);
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    <<: [1]\n    image: x\n"),
            "Sandboxfile:3:10: sandboxes.a: a << merge key needs a map or a list of maps\n");
}

TEST(LoaderTest, YamlSyntaxErrorsHaveAPosition) {
  EXPECT_EQ(Errors("sandboxes:\n  web: [a\n"), "Sandboxfile:3:1: invalid YAML: end of sequence flow not found\n");
  EXPECT_EQ(Errors(""), "Sandboxfile:1:1: the file is empty: expected a map with a sandboxes: key\n");
  EXPECT_EQ(Errors("- a\n"), "Sandboxfile:1:1: expected a map with a sandboxes: key at the top, got a list\n");
  EXPECT_EQ(Errors("sandboxes: {}\n---\nsandboxes: {}\n"),
            "Sandboxfile:2:1: only one YAML document is allowed (found a second after ---)\n");
  EXPECT_EQ(Errors("sandboxes: {}\n...\n# end\nname: x\n"),
            "Sandboxfile:4:1: only one YAML document is allowed (found a second after ---)\n");
  EXPECT_EQ(Errors(","), "Sandboxfile:1:1: expected a map with a sandboxes: key at the top, got nothing\n");
  EXPECT_EQ(Errors("# only a comment\n"), "Sandboxfile:1:1: the file is empty: expected a map with a sandboxes: key\n");
  MustParse("%YAML 1.2\n---\n# the one document\nsandboxes: {}\n...\n");
  MustParse("--- {sandboxes: {}}\n");
}

TEST(LoaderTest, AllErrorsAreReportedAtOnceInFileOrder) {
  std::string text =
      "name: Bad\n"
      "sandboxes:\n"
      "  web:\n"
      "    image: alpine\n"
      "    memroy: 1G\n"
      "    cpus: 0\n"
      "    depends_on: [nope]\n"
      "  db:\n"
      "    cpus: 2\n";
  EXPECT_EQ(Errors(text),
            "Sandboxfile:1:7: name: invalid project name \"Bad\": use 1 to 63 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or digit\n"
            "Sandboxfile:5:5: sandboxes.web.memroy: unknown key; did you mean \"memory\"?\n"
            "Sandboxfile:6:11: sandboxes.web.cpus: expected an integer from 1 to 128, got \"0\"\n"
            "Sandboxfile:7:18: sandboxes.web.depends_on[0]: depends on unknown sandbox \"nope\"\n"
            "Sandboxfile:8:3: sandboxes.db: missing required key \"image\"\n");
  Parsed p = ParseText(text);
  EXPECT_EQ(p.error, p.diagnostics.substr(0, p.diagnostics.size() - 1));
}

TEST(LoaderTest, InterpolationKeepsPositions) {
  Env env = testing::TestEnv();
  Project p = MustParse(Web("    memory: ${MEM:-1G}\n    envs: {T: \"${TAG}\", D: \"$$HOME\", H: \"${HOME}\"}\n"), env);
  EXPECT_EQ(p.sandboxes["web"].memory, kGiB);
  EXPECT_EQ(p.sandboxes["web"].envs["T"], "v1");
  EXPECT_EQ(p.sandboxes["web"].envs["D"], "$HOME");
  EXPECT_EQ(p.sandboxes["web"].envs["H"], "/home/u");
  EXPECT_EQ(Errors(Web("    envs:\n      A: ${API_HOST:?set API_HOST to the api's host name}\n")),
            "Sandboxfile:5:10: sandboxes.web.envs.A: variable API_HOST is not set: set API_HOST to the api's "
            "host name\n");
  // $VAR unbraced, as compose does; $$ keeps a $ for the guest's shell.
  EXPECT_EQ(MustParse(Web("    command: [sh, -c, echo $HOME $$HOME $1]\n"), env).sandboxes["web"].command,
            (std::vector<std::string>{"sh", "-c", "echo /home/u $HOME $1"}));
  Parsed warned = ParseText("sandboxes:\n  web:\n    image: alpine:${NOPE}x\n");
  ASSERT_TRUE(warned.project.has_value());
  EXPECT_EQ(warned.diagnostics,
            "Sandboxfile:3:12: sandboxes.web.image: warning: variable NOPE is not set; using an empty string\n");
  EXPECT_EQ(warned.project->sandboxes["web"].image.reference, "docker.io/library/alpine:x");
}

TEST(LoaderTest, LegacyMicrosandboxFilesLoadWithTheSameMeaning) {
  Project p = MustParse(
      "meta:\n"
      "  authors: [\"Jane <jane@example.com>\"]\n"
      "  description: legacy\n"
      "sandboxes:\n"
      "  app:\n"
      "    version: \"0.1.0\"\n"
      "    image: python\n"
      "    memory: 1024\n"
      "    cpus: 2\n"
      "    volumes: [\"./src:/app/src\"]\n"
      "    ports: [\"8080:80\"]\n"
      "    envs: [\"DEBUG=true\"]\n"
      "    depends_on: [database]\n"
      "    workdir: /app\n"
      "    shell: /bin/bash\n"
      "    scripts:\n"
      "      start: python app.py\n"
      "    scope: any\n"
      "  database:\n"
      "    image: postgres\n"
      "    command: [postgres]\n"
      "    scope: none\n");
  EXPECT_EQ(p.meta.authors, (std::vector<std::string>{"Jane <jane@example.com>"}));
  const Sandbox& app = p.sandboxes["app"];
  EXPECT_EQ(app.memory, 1024 * kMiB);
  EXPECT_EQ(app.cpus, 2);
  EXPECT_EQ(app.network.policy, NetworkPolicy::kAny);
  EXPECT_EQ(app.command, (std::vector<std::string>{"/bin/bash", "-c", "python app.py"}));
  EXPECT_EQ(app.depends_on.count("database"), 1u);
  EXPECT_EQ(p.sandboxes["database"].network.policy, NetworkPolicy::kNone);
}

TEST(LoaderTest, ScriptsAreShellTextForTheGuestNeverSubstituted) {
  Parsed p = ParseText(Web("    command: echo $TAG\n"
                           "    scripts:\n"
                           "      home: echo $HOME ${HOME} $$ ${NOPE:?x} $1\n"
                           "      list: [sh, -c, 'echo \"$TAG\"']\n"));
  ASSERT_TRUE(p.project.has_value()) << p.diagnostics;
  EXPECT_EQ(p.diagnostics, "");  // no warning about HOME or NOPE: neither is the host's business
  const Sandbox& sb = p.project->sandboxes["web"];
  EXPECT_EQ(sb.command, (std::vector<std::string>{"/bin/sh", "-c", "echo v1"}));
  EXPECT_EQ(sb.scripts.at("home"), (std::vector<std::string>{"/bin/sh", "-c", "echo $HOME ${HOME} $$ ${NOPE:?x} $1"}));
  EXPECT_EQ(sb.scripts.at("list"), (std::vector<std::string>{"sh", "-c", "echo \"$TAG\""}));
  // The start script is the command, verbatim too; the canonical form keeps it so.
  Project start = MustParse(Web("    scripts: {start: 'echo $HOME'}\n"));
  EXPECT_EQ(start.sandboxes["web"].command, (std::vector<std::string>{"/bin/sh", "-c", "echo $HOME"}));
  auto again = ParseSandboxfile(CanonicalYaml(start), "/proj/Sandboxfile", testing::TestEnv());
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(start));
}

TEST(LoaderTest, LegacyFilesNeedNoSandboxesKey) {
  Project meta_only = MustParse("meta:\n  description: nothing to run yet\n");
  EXPECT_TRUE(meta_only.sandboxes.empty());
  EXPECT_EQ(meta_only.meta.description, "nothing to run yet");
  EXPECT_TRUE(MustParse("sandboxes:\n").sandboxes.empty());
  EXPECT_TRUE(MustParse("volumes: {cache: {}}\n").sandboxes.empty());
  // Still an error: a file with nothing in it.
  EXPECT_EQ(Errors("# only a comment\n"),
            "Sandboxfile:1:1: the file is empty: expected a map with a sandboxes: key\n");
}

TEST(LoaderTest, LegacyBuildsModulesImportsAreRefused) {
  EXPECT_EQ(Errors("builds:\n  b: {image: x}\nmodules: {}\nsandboxes: {}\n"),
            "Sandboxfile:1:1: builds: builds are not supported: msb runs sandboxes from images; build the root "
            "file system elsewhere and refer to it with image:\n"
            "Sandboxfile:3:1: modules: modules are not supported: declare every sandbox in this file\n");
  EXPECT_EQ(Errors(Web("    imports: {a: /x}\n")),
            "Sandboxfile:4:5: sandboxes.web.imports: imports is not supported: it moves files between "
            "microsandbox builds, and msb does not implement builds\n");
}

// `msb run --secret`: both sources, hosts and wildcards canonical, and every
// malformed form refused with the flag quoted.
TEST(SecretFlagTest, ParsesSourcesAndHostsAndRefusesTheRest) {
  Network net;  // public
  auto env = ParseSecretFlag("TOKEN=env:GH_TOKEN@API.github.com.,*.Example.org", net, "/work", "/root");
  ASSERT_TRUE(env.ok()) << env.error().message();
  EXPECT_EQ(env->first, "TOKEN");
  EXPECT_EQ(env->second.source, Secret::Source::kEnv);
  EXPECT_EQ(env->second.from, "GH_TOKEN");
  EXPECT_EQ(env->second.allow, (std::vector<std::string>{"api.github.com", "*.example.org"}));
  EXPECT_TRUE(env->second.inject_headers);
  EXPECT_FALSE(env->second.inject_query);
  auto file = ParseSecretFlag("KEY=file:keys/k.txt@api.test", net, "/work", "/root");
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(file->second.source, Secret::Source::kFile);
  EXPECT_EQ(file->second.from, "/work/keys/k.txt");
  for (const char* bad : {"TOKEN", "TOKEN=env:GH", "TOKEN=vault:x@h.test", "1X=env:A@h.test", "T=env:A-B@h.test",
                          "T=env:A@", "T=env:A@bad host", "T=file:@h.test"}) {
    auto r = ParseSecretFlag(bad, net, "/work", "/root");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find(std::string("--secret ") + bad), std::string::npos) << r.error().message();
  }
  // A host the network never reaches over HTTPS names the rule to add.
  Network none;
  none.policy = NetworkPolicy::kNone;
  auto unreachable = ParseSecretFlag("T=env:A@api.test", none, "/work", "/root");
  ASSERT_FALSE(unreachable.ok());
  EXPECT_NE(unreachable.error().message().find("--net-rule allow@api.test:tcp:443"), std::string::npos)
      << unreachable.error().message();
}

}  // namespace
}  // namespace msb::schema
