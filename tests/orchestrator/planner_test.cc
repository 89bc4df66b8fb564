// Tests of the planner (orchestrator/planner.cc): each case loads Sandboxfiles
// from strings, records sandboxes as the launcher would (RecordSpecJson and
// ConfigHash of the file they were created from), and asserts the whole plan
// as text, edges included where they matter.
#include "orchestrator/planner.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "schema/sandboxfile.h"

namespace msb::orchestrator {
namespace {

using Digests = std::map<std::string, std::string>;

const std::string kDigestA = "sha256:" + std::string(64, 'a');
const std::string kDigestB = "sha256:" + std::string(64, 'b');

schema::Project Load(const std::string& yaml) {
  auto r = schema::ParseSandboxfile(yaml, "/proj/Sandboxfile", schema::Env{{"HOME", "/home/u"}});
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message()) << "in:\n" << yaml;
  return r.ok() ? *r : schema::Project{};
}

// A record of `name` as created from `project` with `digest`.
SandboxRecord Record(const schema::Project& project, const std::string& name,
                     SandboxStatus status = SandboxStatus::kRunning, const std::string& digest = "",
                     const std::string& reason = "") {
  const schema::Sandbox& sb = project.sandboxes.at(name);
  SandboxRecord rec;
  rec.project = project.name;
  rec.name = name;
  rec.config_hash = schema::ConfigHash(sb, digest);
  rec.image_ref = sb.image.reference;
  rec.image_digest = digest;
  rec.spec_json = RecordSpecJson(sb, digest);
  rec.status = status;
  rec.status_reason = reason;
  return rec;
}

// Every sandbox of `project` running, created with `digests`.
std::vector<SandboxRecord> AllRunning(const schema::Project& project, const Digests& digests = {}) {
  std::vector<SandboxRecord> out;
  for (const auto& [name, _] : project.sandboxes) {
    auto d = digests.find(name);
    out.push_back(Record(project, name, SandboxStatus::kRunning, d == digests.end() ? "" : d->second));
  }
  return out;
}

std::string PlanText(const schema::Project& project, const std::vector<SandboxRecord>& observed,
                     const PlanOptions& options = {}, const Digests& digests = {}) {
  auto plan = MakePlan(project, digests, observed, options);
  if (!plan.ok()) return "error: " + plan.error().message() + "\n";
  return plan->ToText();
}

std::string EdgesText(const schema::Project& project, const std::vector<SandboxRecord>& observed,
                      const PlanOptions& options = {}) {
  auto plan = MakePlan(project, {}, observed, options);
  if (!plan.ok()) return "error: " + plan.error().message() + "\n";
  return plan->EdgesText();
}

// The plan for a file changed from `before` (all running) to `after`.
std::string Change(const std::string& before, const std::string& after,
                   const PlanOptions& options = {}) {
  return PlanText(Load(after), AllRunning(Load(before)), options);
}

const char* const kShop =
    "name: shop\n"
    "sandboxes:\n"
    "  web:\n"
    "    image: alpine\n"
    "    depends_on: {api: {condition: healthy}, cache: {}}\n"
    "  api:\n"
    "    image: alpine\n"
    "    depends_on: [db]\n"
    "    healthcheck: {command: [true]}\n"
    "  db:\n"
    "    image: alpine\n"
    "    healthcheck: {command: [true]}\n"
    "  cache:\n"
    "    image: redis\n";

TEST(PlannerTest, FreshProjectCreatesEverythingDependenciesFirst) {
  schema::Project p = Load(kShop);
  EXPECT_EQ(PlanText(p, {}),
            "+ create cache\n"
            "+ create db\n"
            "+ create api\n"
            "+ create web\n"
            "plan: 4 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  EXPECT_EQ(EdgesText(p, {}),
            "api after db\n"
            "web after api (healthy), cache\n");
}

TEST(PlannerTest, NoChangeIsNothingToDo) {
  schema::Project p = Load(kShop);
  auto plan = MakePlan(p, {}, AllRunning(p), {});
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->NothingToDo());
  EXPECT_EQ(plan->ToText(),
            "= cache up to date\n"
            "= db up to date\n"
            "= api up to date\n"
            "= web up to date\n"
            "plan: nothing to do, 4 unchanged\n");
  EXPECT_EQ(plan->EdgesText(), "");
  // Reloading the same text, a starting sandbox, and comments change nothing.
  EXPECT_EQ(PlanText(Load(std::string("# again\n") + kShop),
                     {Record(p, "web", SandboxStatus::kStarting), Record(p, "api"),
                      Record(p, "db"), Record(p, "cache")}),
            "= cache up to date\n"
            "= db up to date\n"
            "= api up to date\n"
            "= web up to date\n"
            "plan: nothing to do, 4 unchanged\n");
  EXPECT_EQ(PlanText(Load("sandboxes: {}\n"), {}), "plan: nothing to do, 0 unchanged\n");
}

TEST(PlannerTest, MetaChangesNothing) {
  EXPECT_EQ(Change("sandboxes:\n  api: {image: alpine}\n",
                   "sandboxes:\n  api: {image: alpine, meta: {description: the api}}\n"),
            "= api up to date\n"
            "plan: nothing to do, 1 unchanged\n");
}

const char* const kApi =
    "volumes: {cache: {}}\n"
    "sandboxes:\n"
    "  api:\n"
    "    image: alpine:3.19\n";

// Each class of field that shapes the VM replaces it, with the field as cause.
TEST(PlannerTest, EachVmFieldChangeReplaces) {
  struct Case {
    std::string before;  // lines added to kApi's sandbox
    std::string after;
    std::string line;  // the expected step
  };
  const Case cases[] = {
      {"", "    memory: 1G\n", "-/+ replace api (memory 512M -> 1G)"},
      {"    memory: 1536\n", "    memory: 2G\n", "-/+ replace api (memory 1536M -> 2G)"},
      {"", "    disk: 4G\n", "-/+ replace api (disk 2G -> 4G)"},
      {"", "    cpus: 2\n", "-/+ replace api (cpus 1 -> 2)"},
      {"", "    ephemeral: true\n", "-/+ replace api (ephemeral false -> true)"},
      {"    envs: [A=1, B=2, C=3]\n", "    envs: {A: 1, B: two words, D: \"\"}\n",
       "-/+ replace api (envs.B 2 -> \"two words\"; envs.C 3 -> (none); envs.D (none) -> \"\")"},
      {"    command: [python, app.py]\n", "    command: python main.py\n",
       "-/+ replace api (command [python, app.py] -> [/bin/sh, -c, \"python main.py\"])"},
      {"", "    command: [run]\n", "-/+ replace api (command [] -> [run])"},
      {"    volumes: [./src:/app]\n", "    volumes: [./src:/app:ro, cache:/var/cache]\n",
       "-/+ replace api (volumes [/proj/src:/app] -> [/proj/src:/app:ro, cache:/var/cache])"},
      {"    ports: [8080:80]\n", "    ports: [8081:80, 0.0.0.0:5353:53/udp]\n",
       "-/+ replace api (ports [8080:80] -> [8081:80, 0.0.0.0:5353:53/udp])"},
      {"", "    tmpfs: [/tmp]\n", "-/+ replace api (tmpfs [] -> [/tmp:size=256M])"},
      {"", "    network: {policy: none}\n", "-/+ replace api (network.policy public -> none)"},
      {"    scope: public\n", "    network: {rules: [allow@api.github.com:tcp:443], dns: {servers: [1.1.1.1]}}\n",
       "-/+ replace api (network.dns.servers [] -> [1.1.1.1]; "
       "network.rules [] -> [allow:egress@api.github.com:tcp:443])"},
      {"    secrets: {T: {from_env: GH, allow: [api.github.com]}}\n",
       "    secrets: {T: {from_env: GH, allow: [api.github.com, uploads.github.com]}}\n",
       "-/+ replace api (secrets.T.allow [api.github.com] -> [api.github.com, uploads.github.com])"},
      {"", "    secrets: {T: {from_env: GH, allow: [api.github.com]}}\n",
       "-/+ replace api (secrets.T (none) -> from_env GH allow [api.github.com])"},
      {"    secrets: {T: {from_env: GH, allow: [x.org]}}\n",
       "    secrets: {T: {from_file: ./t, allow: [x.org], inject: {query: true}}}\n",
       "-/+ replace api (secrets.T.from_env GH -> (none); secrets.T.from_file (none) -> /proj/t; "
       "secrets.T.inject.query false -> true)"},
      {"", "    image: alpine:3.20\n",
       "-/+ replace api (image docker.io/library/alpine:3.19 -> docker.io/library/alpine:3.20)"},
      {"", "    user: \"1000\"\n    workdir: /app\n    shell: /bin/bash\n",
       "-/+ replace api (shell /bin/sh -> /bin/bash; user (none) -> 1000; workdir (none) -> /app)"},
      {"", "    scripts: {migrate: alembic upgrade head}\n",
       "-/+ replace api (scripts.migrate (none) -> [/bin/sh, -c, \"alembic upgrade head\"])"},
      {"", "    security: {no_new_privileges: true}\n",
       "-/+ replace api (security (none) -> {no_new_privileges: true})"},
      {"    security: {cap_drop: [ALL]}\n", "    security: {cap_drop: [ALL], cap_add: [kill]}\n",
       "-/+ replace api (security.cap_add [] -> [CAP_KILL])"},
      {"    security: {read_only_root: true}\n", "    security: {level: strict, cap_drop: []}\n",
       "-/+ replace api (network.policy public -> none; security.no_new_privileges false -> true)"},
      // Several at once, in key order; in-place fields are listed too.
      {"", "    restart: always\n    memory: 1G\n    cpus: 2\n",
       "-/+ replace api (cpus 1 -> 2; memory 512M -> 1G; restart no -> always)"},
  };
  for (const Case& c : cases) {
    std::string before = std::string(kApi) + c.before;
    std::string after = std::string(kApi) + c.after;
    // A later "image:" line would be a duplicate key: put it in place of the first.
    if (c.after.find("    image:") != std::string::npos) after = "sandboxes:\n  api:\n" + c.after;
    EXPECT_EQ(Change(before, after),
              c.line + "\n" +
                  "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n")
        << "before:\n" << before << "after:\n" << after;
  }
}

TEST(PlannerTest, LongValuesAreElided) {
  EXPECT_EQ(Change(std::string(kApi),
                   std::string(kApi) + "    command: [python, -m, very.long.module.name, --flag, value]\n"),
            "-/+ replace api (command [] -> [python, -m, very.long.module.name, --flag, v...)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
}

TEST(PlannerTest, ImageDigestChangeAloneReplaces) {
  schema::Project p = Load(kApi);
  std::vector<SandboxRecord> observed = {Record(p, "api", SandboxStatus::kRunning, kDigestA)};
  EXPECT_EQ(PlanText(p, observed, {}, {{"api", kDigestB}}),
            "-/+ replace api (image digest changed)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  // Same digest; and an image not resolved yet counts as the recorded one.
  EXPECT_EQ(PlanText(p, observed, {}, {{"api", kDigestA}}),
            "= api up to date\nplan: nothing to do, 1 unchanged\n");
  EXPECT_EQ(PlanText(p, observed, {}, {}), "= api up to date\nplan: nothing to do, 1 unchanged\n");
  EXPECT_EQ(PlanText(p, observed, {}, {{"api", ""}}),
            "= api up to date\nplan: nothing to do, 1 unchanged\n");
  // Digest and memory: the field first, then the digest.
  EXPECT_EQ(PlanText(Load(std::string(kApi) + "    memory: 1G\n"), observed, {}, {{"api", kDigestB}}),
            "-/+ replace api (memory 512M -> 1G; image digest changed)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  // A new reference implies a new digest: only the reference is named.
  EXPECT_EQ(PlanText(Load("sandboxes:\n  api: {image: alpine:3.20}\n"), observed, {},
                     {{"api", kDigestB}}),
            "-/+ replace api (image docker.io/library/alpine:3.19 -> docker.io/library/alpine:3.20)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
}

TEST(PlannerTest, HashChangeWithoutVisibleDifferenceSaysConfigChanged) {
  schema::Project p = Load(kApi);
  SandboxRecord rec = Record(p, "api");
  rec.config_hash = std::string(64, '0');  // e.g. written by an older msb
  EXPECT_EQ(PlanText(p, {rec}),
            "-/+ replace api (config changed)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  rec.spec_json = "not json";
  EXPECT_EQ(PlanText(p, {rec}),
            "-/+ replace api (config changed)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  // Same hash but an unreadable spec: the in-place settings are reapplied.
  rec = Record(p, "api");
  rec.spec_json = "{}";
  EXPECT_EQ(PlanText(p, {rec}),
            "~ update api (recorded spec unreadable)\n"
            "plan: 0 to create, 0 to replace, 1 to update, 0 to start, 0 to remove, 0 unchanged\n");
}

TEST(PlannerTest, RestartHealthcheckAndDependsOnUpdateInPlace) {
  const std::string base =
      "sandboxes:\n  db: {image: alpine, healthcheck: {command: [true]}}\n  worker:\n    image: alpine\n";
  const std::string tail =
      "plan: 0 to create, 0 to replace, 1 to update, 0 to start, 0 to remove, 1 unchanged\n";
  EXPECT_EQ(Change(base, base + "    restart: always\n"),
            "= db up to date\n~ update worker (restart no -> always)\n" + tail);
  EXPECT_EQ(Change(base + "    restart: on-failure\n", base + "    restart: on-failure:5\n"),
            "= db up to date\n~ update worker (restart on-failure -> on-failure:5)\n" + tail);
  EXPECT_EQ(Change(base, base + "    healthcheck: {command: [test, -f, /ok], interval: 5s}\n"),
            "= db up to date\n"
            "~ update worker (healthcheck (none) -> [test, -f, /ok] every 5s)\n" + tail);
  EXPECT_EQ(Change(base + "    healthcheck: {command: [true], interval: 5s}\n",
                   base + "    healthcheck: {command: [true], interval: 1m30s, timeout: 500ms}\n"),
            "= db up to date\n"
            "~ update worker (healthcheck.interval 5s -> 1m30s; healthcheck.timeout 5s -> 500ms)\n" +
                tail);
  EXPECT_EQ(Change(base + "    healthcheck: {command: [true]}\n", base),
            "= db up to date\n~ update worker (healthcheck [true] every 10s -> (none))\n" + tail);
  // db's step is a noop, so the update of worker waits for nothing.
  const std::string with_dep = base + "    depends_on: {db: {condition: healthy}}\n";
  EXPECT_EQ(Change(base, with_dep),
            "= db up to date\n~ update worker (depends_on [] -> [db:healthy])\n" + tail);
  EXPECT_EQ(Change(base + "    depends_on: [db]\n", with_dep),
            "= db up to date\n~ update worker (depends_on [db] -> [db:healthy])\n" + tail);
  EXPECT_EQ(EdgesText(Load(with_dep), AllRunning(Load(base))), "");
}

TEST(PlannerTest, StoppedFailedExitedOrNeverStartedSandboxesStart) {
  schema::Project p = Load(kShop);
  SandboxRecord exited = Record(p, "api", SandboxStatus::kExited);
  exited.exit_code = 1;
  std::vector<SandboxRecord> observed = {
      Record(p, "db", SandboxStatus::kFailed, "", "supervisor died"),
      Record(p, "cache", SandboxStatus::kStopped), exited,
      Record(p, "web", SandboxStatus::kCreated)};
  EXPECT_EQ(PlanText(p, observed),
            "> start cache (was stopped)\n"
            "> start db (was failed: supervisor died)\n"
            "> start api (was exited with code 1)\n"
            "> start web (was created, never started)\n"
            "plan: 0 to create, 0 to replace, 0 to update, 4 to start, 0 to remove, 0 unchanged\n");
  EXPECT_EQ(EdgesText(p, observed),
            "api after db\n"
            "web after api (healthy), cache\n");
  // A stopped sandbox with in-place changes starts with them.
  schema::Project q = Load("sandboxes:\n  job: {image: alpine}\n");
  SandboxRecord job = Record(q, "job", SandboxStatus::kExited, "", "finished");
  job.exit_code = 0;
  EXPECT_EQ(PlanText(Load("sandboxes:\n  job: {image: alpine, restart: always}\n"), {job}),
            "> start job (was exited with code 0: finished; restart no -> always)\n"
            "plan: 0 to create, 0 to replace, 0 to update, 1 to start, 0 to remove, 0 unchanged\n");
  // A stopped sandbox whose VM config changed is replaced, not started.
  EXPECT_EQ(PlanText(Load("sandboxes:\n  job: {image: alpine, cpus: 2}\n"), {job}),
            "-/+ replace job (cpus 1 -> 2)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
}

// up --watch's later passes: a sandbox stopped on request stays stopped;
// those that failed or exited by themselves are started as before, and a
// stopped one whose VM config changed is still replaced.
TEST(PlannerTest, KeepStoppedLeavesOnlyWhatTheUserStopped) {
  schema::Project p = Load(kShop);
  SandboxRecord exited = Record(p, "api", SandboxStatus::kExited);
  exited.exit_code = 1;
  std::vector<SandboxRecord> observed = {
      Record(p, "db", SandboxStatus::kFailed, "", "supervisor died"),
      Record(p, "cache", SandboxStatus::kStopped, "", "msb stop"), exited,
      Record(p, "web", SandboxStatus::kRunning)};
  PlanOptions keep;
  keep.keep_stopped = true;
  EXPECT_EQ(PlanText(p, observed, keep),
            "= cache unchanged (was stopped: msb stop; stopped on request, left stopped)\n"
            "> start db (was failed: supervisor died)\n"
            "> start api (was exited with code 1)\n"
            "= web up to date\n"
            "plan: 0 to create, 0 to replace, 0 to update, 2 to start, 0 to remove, 2 unchanged\n");
  // Without the option (msb up, and the watch's first pass) it starts.
  EXPECT_NE(PlanText(p, observed).find("> start cache (was stopped: msb stop)\n"), std::string::npos)
      << PlanText(p, observed);
  schema::Project q = Load("sandboxes:\n  job: {image: alpine}\n");
  SandboxRecord job = Record(q, "job", SandboxStatus::kStopped);
  EXPECT_EQ(PlanText(Load("sandboxes:\n  job: {image: alpine, cpus: 2}\n"), {job}, keep),
            "-/+ replace job (cpus 1 -> 2)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
}

TEST(PlannerTest, OrphansAreRemovedFirstDependentsBeforeDependencies) {
  schema::Project old_file = Load(
      "sandboxes:\n"
      "  web: {image: alpine}\n"
      "  old-b: {image: alpine, depends_on: [old-c]}\n"
      "  old-a: {image: alpine, depends_on: [old-b]}\n"
      "  old-c: {image: alpine}\n"
      "  zz: {image: alpine}\n");
  schema::Project p = Load("sandboxes:\n  web: {image: alpine}\n  new: {image: alpine}\n");
  std::vector<SandboxRecord> observed = AllRunning(old_file);
  EXPECT_EQ(PlanText(p, observed),
            "- remove old-a (no longer declared)\n"
            "- remove old-b (no longer declared)\n"
            "- remove old-c (no longer declared)\n"
            "- remove zz (no longer declared)\n"
            "+ create new\n"
            "= web up to date\n"
            "plan: 1 to create, 0 to replace, 0 to update, 0 to start, 4 to remove, 1 unchanged\n");
  EXPECT_EQ(EdgesText(p, observed),
            "old-b after old-a\n"
            "old-c after old-b\n"
            "new after old-a, old-b, old-c, zz\n");
  PlanOptions keep;
  keep.remove_orphans = false;
  EXPECT_EQ(PlanText(p, observed, keep),
            "= old-a unchanged (no longer declared, kept)\n"
            "= old-b unchanged (no longer declared, kept)\n"
            "= old-c unchanged (no longer declared, kept)\n"
            "= zz unchanged (no longer declared, kept)\n"
            "+ create new\n"
            "= web up to date\n"
            "plan: 1 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 5 unchanged\n");
  EXPECT_EQ(EdgesText(p, observed, keep), "");
}

TEST(PlannerTest, RenameIsRemoveOfTheOldNameAndCreateOfTheNew) {
  EXPECT_EQ(Change("sandboxes:\n  api: {image: alpine, ports: [8080:80]}\n",
                   "sandboxes:\n  backend: {image: alpine, ports: [8080:80]}\n"),
            "- remove api (no longer declared)\n"
            "+ create backend\n"
            "plan: 1 to create, 0 to replace, 0 to update, 0 to start, 1 to remove, 0 unchanged\n");
  schema::Project before = Load("sandboxes:\n  api: {image: alpine, ports: [8080:80]}\n");
  EXPECT_EQ(EdgesText(Load("sandboxes:\n  backend: {image: alpine, ports: [8080:80]}\n"),
                      AllRunning(before)),
            "backend after api\n");
}

const char* const kChain =
    "sandboxes:\n"
    "  a: {image: alpine, depends_on: {b: {condition: healthy}}}\n"
    "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}}\n"
    "  c: {image: alpine}\n"
    "  d: {image: alpine}\n";

TEST(PlannerTest, DependencyChainOrdersStepsAndCarriesConditions) {
  schema::Project p = Load(kChain);
  EXPECT_EQ(PlanText(p, {}),
            "+ create c\n"
            "+ create b\n"
            "+ create a\n"
            "+ create d\n"
            "plan: 4 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  EXPECT_EQ(EdgesText(p, {}),
            "b after c (completed)\n"
            "a after b (healthy)\n");
  auto plan = MakePlan(p, {}, {}, {});
  ASSERT_TRUE(plan.ok());
  const Step* a = plan->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->depends_on, (std::vector<StepEdge>{{"b", schema::DependCondition::kHealthy}}));
  EXPECT_EQ(plan->Find("zz"), nullptr);

  // Only c exists (completed): it starts again, and b waits for it to complete.
  SandboxRecord c = Record(p, "c", SandboxStatus::kExited);
  c.exit_code = 0;
  EXPECT_EQ(PlanText(p, {c}),
            "> start c (was exited with code 0)\n"
            "+ create b\n"
            "+ create a\n"
            "+ create d\n"
            "plan: 3 to create, 0 to replace, 0 to update, 1 to start, 0 to remove, 0 unchanged\n");
  EXPECT_EQ(EdgesText(p, {c}),
            "b after c (completed)\n"
            "a after b (healthy)\n");
}

TEST(PlannerTest, ReplacedDependencyLeavesDependentsUp) {
  const std::string after =
      "sandboxes:\n"
      "  a: {image: alpine, depends_on: {b: {condition: healthy}}}\n"
      "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}}\n"
      "  c: {image: alpine, memory: 1G}\n"
      "  d: {image: alpine}\n";
  EXPECT_EQ(Change(kChain, after),
            "-/+ replace c (memory 512M -> 1G)\n"
            "= b up to date\n"
            "= a up to date\n"
            "= d up to date\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 3 unchanged\n");
  // Replaced together: the dependent's replace waits for the dependency's.
  const std::string both =
      "sandboxes:\n"
      "  a: {image: alpine, depends_on: {b: {condition: healthy}}, cpus: 2}\n"
      "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}}\n"
      "  c: {image: alpine, memory: 1G}\n"
      "  d: {image: alpine}\n";
  EXPECT_EQ(Change(kChain, both),
            "-/+ replace c (memory 512M -> 1G)\n"
            "= b up to date\n"
            "-/+ replace a (cpus 1 -> 2)\n"
            "= d up to date\n"
            "plan: 0 to create, 2 to replace, 0 to update, 0 to start, 0 to remove, 2 unchanged\n");
  EXPECT_EQ(EdgesText(Load(both), AllRunning(Load(kChain))), "");
  const std::string ab =
      "sandboxes:\n"
      "  a: {image: alpine, depends_on: {b: {condition: healthy}}, cpus: 2}\n"
      "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}, cpus: 2}\n"
      "  c: {image: alpine}\n"
      "  d: {image: alpine}\n";
  EXPECT_EQ(EdgesText(Load(ab), AllRunning(Load(kChain))), "a after b (healthy)\n");
}

TEST(PlannerTest, ForceRecreateReplacesEverythingDeclared) {
  schema::Project before = Load(kChain);
  schema::Project p = Load(
      "sandboxes:\n"
      "  a: {image: alpine, depends_on: {b: {condition: healthy}}, restart: always}\n"
      "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}}\n"
      "  c: {image: alpine, memory: 1G}\n"
      "  e: {image: alpine}\n");
  std::vector<SandboxRecord> observed = {
      Record(before, "a"), Record(before, "b"), Record(before, "c"),
      Record(before, "d"),  // an orphan: removed, not forced
  };
  observed.push_back(Record(before, "d"));
  observed.back().name = "e";
  observed.back().status = SandboxStatus::kStopped;
  PlanOptions force;
  force.force_recreate = true;
  EXPECT_EQ(PlanText(p, observed, force),
            "- remove d (no longer declared)\n"
            "-/+ replace c (memory 512M -> 1G)\n"
            "-/+ replace b (forced)\n"
            "-/+ replace a (forced; restart no -> always)\n"
            "-/+ replace e (forced; was stopped)\n"
            "plan: 0 to create, 4 to replace, 0 to update, 0 to start, 1 to remove, 0 unchanged\n");
  EXPECT_EQ(EdgesText(p, observed, force),
            "c after d\n"
            "b after c (completed), d\n"
            "a after b (healthy), d\n"
            "e after d\n");
}

TEST(PlannerTest, NoRecreateKeepsChangedSandboxes) {
  schema::Project before = Load(kChain);
  schema::Project p = Load(
      "sandboxes:\n"
      "  a: {image: alpine, depends_on: {b: {condition: healthy}}, restart: always}\n"
      "  b: {image: alpine, depends_on: {c: {condition: completed}}, healthcheck: {command: [true]}}\n"
      "  c: {image: alpine, memory: 1G}\n"
      "  d: {image: alpine, cpus: 2}\n"
      "  e: {image: alpine}\n");
  std::vector<SandboxRecord> observed = {Record(before, "a"), Record(before, "b"), Record(before, "c"),
                                         Record(before, "d", SandboxStatus::kStopped)};
  PlanOptions no;
  no.no_recreate = true;
  EXPECT_EQ(PlanText(p, observed, no),
            "= c unchanged (not recreated (--no-recreate): memory 512M -> 1G)\n"
            "= b up to date\n"
            "~ update a (restart no -> always)\n"
            "> start d (was stopped; not recreated (--no-recreate): cpus 1 -> 2)\n"
            "+ create e\n"
            "plan: 1 to create, 0 to replace, 1 to update, 1 to start, 0 to remove, 2 unchanged\n");
  PlanOptions both;
  both.no_recreate = true;
  both.force_recreate = true;
  EXPECT_EQ(PlanText(p, observed, both),
            "error: --force-recreate and --no-recreate cannot be used together\n");
}

TEST(PlannerTest, SelectionActsOnNamedSandboxesAndTheirDependencies) {
  schema::Project before = Load(kShop);
  schema::Project p = Load(
      "name: shop\n"
      "sandboxes:\n"
      "  web:\n"
      "    image: alpine\n"
      "    depends_on: {api: {condition: healthy}, cache: {}}\n"
      "    cpus: 2\n"
      "  api:\n"
      "    image: alpine\n"
      "    depends_on: [db]\n"
      "    healthcheck: {command: [true]}\n"
      "  db:\n"
      "    image: alpine\n"
      "    healthcheck: {command: [true]}\n"
      "    memory: 1G\n"
      "  cache:\n"
      "    image: redis\n"
      "    memory: 1G\n"
      "  worker: {image: alpine}\n");
  std::vector<SandboxRecord> observed = AllRunning(before);
  observed.push_back(Record(before, "db"));
  observed.back().name = "old";  // an orphan: untouched by a selection
  PlanOptions api;
  api.selection = {"api"};
  EXPECT_EQ(PlanText(p, observed, api),
            "-/+ replace db (memory 512M -> 1G)\n"
            "= api up to date\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 1 unchanged\n");
  PlanOptions two;
  two.selection = {"worker", "web"};
  EXPECT_EQ(PlanText(p, observed, two),
            "-/+ replace cache (memory 512M -> 1G)\n"
            "-/+ replace db (memory 512M -> 1G)\n"
            "= api up to date\n"
            "-/+ replace web (cpus 1 -> 2)\n"
            "+ create worker\n"
            "plan: 1 to create, 3 to replace, 0 to update, 0 to start, 0 to remove, 1 unchanged\n");
  EXPECT_EQ(EdgesText(p, observed, two), "web after cache\n");
  PlanOptions none;
  none.selection = {"old"};
  EXPECT_EQ(PlanText(p, observed, none),
            "error: no sandbox named old in the Sandboxfile (declared: api, cache, db, web, worker)\n");
  // Without a selection the orphan goes and everything is converged.
  EXPECT_EQ(PlanText(p, observed),
            "- remove old (no longer declared)\n"
            "-/+ replace cache (memory 512M -> 1G)\n"
            "-/+ replace db (memory 512M -> 1G)\n"
            "= api up to date\n"
            "-/+ replace web (cpus 1 -> 2)\n"
            "+ create worker\n"
            "plan: 1 to create, 3 to replace, 0 to update, 0 to start, 1 to remove, 1 unchanged\n");
}

TEST(PlannerTest, OnePlanWithEveryKindOfStep) {
  schema::Project before = Load(
      "sandboxes:\n"
      "  old: {image: alpine}\n"
      "  db: {image: postgres, healthcheck: {command: [pg_isready]}}\n"
      "  api: {image: alpine, depends_on: {db: {condition: healthy}}}\n"
      "  worker: {image: alpine, depends_on: [api]}\n"
      "  web: {image: alpine}\n");
  schema::Project after = Load(
      "sandboxes:\n"
      "  db: {image: postgres, healthcheck: {command: [pg_isready]}}\n"
      "  api: {image: alpine, depends_on: {db: {condition: healthy}}, memory: 1G}\n"
      "  worker: {image: alpine, depends_on: [api], restart: always}\n"
      "  web: {image: alpine}\n"
      "  front: {image: nginx, depends_on: [web, api]}\n");
  std::vector<SandboxRecord> observed = {
      Record(before, "old", SandboxStatus::kRunning, kDigestA),
      Record(before, "db", SandboxStatus::kFailed, kDigestA, "supervisor exited with status 1"),
      Record(before, "api", SandboxStatus::kRunning, kDigestA),
      Record(before, "worker", SandboxStatus::kRunning, kDigestA),
      Record(before, "web", SandboxStatus::kRunning, kDigestA)};
  auto plan = MakePlan(after, {{"api", kDigestB}, {"db", kDigestA}}, observed, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->ToText(),
            "- remove old (no longer declared)\n"
            "> start db (was failed: supervisor exited with status 1)\n"
            "-/+ replace api (memory 512M -> 1G; image digest changed)\n"
            "= web up to date\n"
            "+ create front\n"
            "~ update worker (restart no -> always)\n"
            "plan: 1 to create, 1 to replace, 1 to update, 1 to start, 1 to remove, 1 unchanged\n");
  EXPECT_EQ(plan->EdgesText(),
            "db after old\n"
            "api after db (healthy), old\n"
            "front after api, old\n"
            "worker after api\n");
}

TEST(PlannerTest, HandBuiltProjectsWithBadDependenciesAreRefused) {
  schema::Project p = Load("sandboxes:\n  a: {image: alpine}\n  b: {image: alpine}\n");
  p.sandboxes["a"].depends_on["b"] = {};
  p.sandboxes["b"].depends_on["a"] = {};
  EXPECT_EQ(PlanText(p, {}), "error: depends_on has a cycle among: a, b\n");
  p.sandboxes["b"].depends_on.clear();
  p.sandboxes["b"].depends_on["x"] = {};
  EXPECT_EQ(PlanText(p, {}), "error: sandbox b depends on x, which is not declared\n");
}

TEST(PlannerTest, RecordSpecJsonHoldsTheCanonicalFormAndTheDigest) {
  schema::Project p = Load("sandboxes:\n  a: {image: alpine, cpus: 2}\n");
  const schema::Sandbox& a = p.sandboxes.at("a");
  nlohmann::json expected = {{"canonical", schema::CanonicalJson(a)}, {"image_digest", kDigestA}};
  EXPECT_EQ(RecordSpecJson(a, kDigestA), expected.dump());
  EXPECT_EQ(RecordSpecJson(a, kDigestA).rfind("{\"canonical\":{\"command\":[],\"cpus\":2,", 0), 0u);
  EXPECT_NE(RecordSpecJson(a, kDigestA).find("\"image_digest\":\"sha256:aaaa"), std::string::npos);
}

TEST(PlannerTest, StepKindNames) {
  EXPECT_STREQ(ToString(StepKind::kNoop), "noop");
  EXPECT_STREQ(ToString(StepKind::kCreate), "create");
  EXPECT_STREQ(ToString(StepKind::kReplace), "replace");
  EXPECT_STREQ(ToString(StepKind::kUpdate), "update");
  EXPECT_STREQ(ToString(StepKind::kStart), "start");
  EXPECT_STREQ(ToString(StepKind::kRemove), "remove");
}

}  // namespace
}  // namespace msb::orchestrator
