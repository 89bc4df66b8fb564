// agentd's unpack mode in-process: entry name cleaning (a property against a
// reference model), whiteout classification, the xattr filter, the unpack /
// layer message decoders, and a property of ApplyLayer's whiteout and opaque
// handling against a model of the OCI rules, and the parent directories it
// remembers within a layer, applied in a forked child chrooted into a
// scratch directory (root only; the tars are generated here).
// Hostile layers and the real guest are tests/image/flatten_test.cc.
#include "agentd/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "agent/messages.h"
#include "common/archive_ptr.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"

namespace msb::agent {
namespace {

TEST(CleanEntryPath, Examples) {
  EXPECT_EQ(*CleanEntryPath("etc/passwd"), "etc/passwd");
  EXPECT_EQ(*CleanEntryPath("./etc/passwd"), "etc/passwd");
  EXPECT_EQ(*CleanEntryPath("/etc/x"), "etc/x");
  EXPECT_EQ(*CleanEntryPath("//etc//x/"), "etc/x");
  EXPECT_EQ(*CleanEntryPath("a/../b/./c"), "b/c");
  EXPECT_EQ(*CleanEntryPath("./"), "");
  EXPECT_EQ(*CleanEntryPath("/"), "");
  EXPECT_FALSE(CleanEntryPath("../../etc/evil").ok());
  EXPECT_FALSE(CleanEntryPath("a/../../x").ok());
  EXPECT_FALSE(CleanEntryPath("/../x").ok());
  EXPECT_FALSE(CleanEntryPath(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(CleanEntryPath(std::string(256, 'a')).ok());
  EXPECT_TRUE(CleanEntryPath(std::string(255, 'a')).ok());
  std::string deep;
  for (int i = 0; i < 2100; ++i) deep += "a/";
  EXPECT_FALSE(CleanEntryPath(deep).ok());
}

// Any name built from ordinary, ".", ".." and empty components cleans to what
// a stack model says, or fails exactly when the model climbs above the root;
// a cleaned path never has an empty, "." or ".." component or a leading "/".
RC_GTEST_PROP(CleanEntryPath, MatchesAStackModel, ()) {
  auto parts = *rc::gen::container<std::vector<std::string>>(
      rc::gen::element<std::string>("a", "bb", ".", "..", "", ".wh.x", "..a"));
  bool absolute = *rc::gen::arbitrary<bool>();
  std::string name = absolute ? "/" : "";
  for (size_t i = 0; i < parts.size(); ++i) name += (i ? "/" : "") + parts[i];
  std::vector<std::string> stack;
  bool escapes = false;
  for (const auto& p : parts) {
    if (p == "..") {
      if (stack.empty()) {
        escapes = true;
        break;
      }
      stack.pop_back();
    } else if (!p.empty() && p != ".") {
      stack.push_back(p);
    }
  }
  auto got = CleanEntryPath(name);
  RC_ASSERT(got.ok() == !escapes);
  if (!got.ok()) return;
  std::string want;
  for (const auto& s : stack) want += (want.empty() ? "" : "/") + s;
  RC_ASSERT(*got == want);
}

TEST(ClassifyWhiteout, Kinds) {
  auto w = ClassifyWhiteout("etc/.wh.passwd");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->kind, Whiteout::Kind::kRemove);
  EXPECT_EQ(w->target, "etc/passwd");
  w = ClassifyWhiteout(".wh.top");
  EXPECT_EQ(w->kind, Whiteout::Kind::kRemove);
  EXPECT_EQ(w->target, "top");
  w = ClassifyWhiteout("var/.wh..wh..opq");
  EXPECT_EQ(w->kind, Whiteout::Kind::kOpaque);
  EXPECT_EQ(w->target, "var");
  w = ClassifyWhiteout(".wh..wh..opq");
  EXPECT_EQ(w->kind, Whiteout::Kind::kOpaque);
  EXPECT_EQ(w->target, "");
  EXPECT_EQ(ClassifyWhiteout("a/.wh..wh.plnk")->kind, Whiteout::Kind::kIgnore);
  EXPECT_EQ(ClassifyWhiteout("a/wh.x")->kind, Whiteout::Kind::kNone);
  EXPECT_EQ(ClassifyWhiteout("a/x.wh.y")->kind, Whiteout::Kind::kNone);
  EXPECT_FALSE(ClassifyWhiteout("a/.wh.").ok());
  EXPECT_FALSE(ClassifyWhiteout("a/.wh..").ok());
  EXPECT_FALSE(ClassifyWhiteout("a/.wh...").ok());
}

TEST(XattrAllowed, OnlyUserCapabilitiesAndAcls) {
  EXPECT_TRUE(XattrAllowed("user.mime_type"));
  EXPECT_TRUE(XattrAllowed("security.capability"));
  EXPECT_TRUE(XattrAllowed("system.posix_acl_access"));
  EXPECT_FALSE(XattrAllowed("trusted.overlay.opaque"));
  EXPECT_FALSE(XattrAllowed("security.selinux"));
  EXPECT_FALSE(XattrAllowed("security.capabilityx"));
  EXPECT_FALSE(XattrAllowed("userx"));
}

TEST(UnpackMessages, RoundTrip) {
  UnpackRequest req;
  req.target_serial = "msb-target";
  req.layers = {{"msb-layer-0", 123, "application/vnd.oci.image.layer.v1.tar+gzip"}, {"msb-layer-1", 7, ""}};
  auto back = ParseUnpackRequest(Encode(req));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->layers.size(), 2u);
  EXPECT_EQ(back->layers[0].size, 123u);
  EXPECT_EQ(back->layers[1].serial, "msb-layer-1");
  // No start fields: nothing to seed, no clock, not restored.
  EXPECT_EQ(back->start.entropy, "");
  EXPECT_EQ(back->start.time_ns, 0);
  EXPECT_FALSE(back->start.restored);
  req.start = GuestStart{std::string(128, 'a') + "09", 1767225600123456789, true};
  back = ParseUnpackRequest(Encode(req));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->start.entropy, req.start.entropy);
  EXPECT_EQ(back->start.time_ns, 1767225600123456789);
  EXPECT_TRUE(back->start.restored);
  LayerReport r{3, "sha256:" + std::string(64, 'a'), 10, 4096};
  auto rb = ParseLayerReport(Encode(r));
  ASSERT_TRUE(rb.ok()) << rb.error().message();
  EXPECT_EQ(rb->index, 3u);
  EXPECT_EQ(rb->diff_id, r.diff_id);
  EXPECT_EQ(rb->bytes, 4096u);
}

TEST(UnpackMessages, RefusesBadRequestsAndReports) {
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"layers":[{"serial":"a","size":1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[{"serial":"a b","size":1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[{"serial":"a","size":-1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(
                   R"({"target_serial":"123456789012345678901","layers":[{"serial":"a","size":1}]})")
                   .ok());
  std::string many = R"({"target_serial":"t","layers":[)";
  for (size_t i = 0; i <= kMaxUnpackLayers; ++i) many += std::string(i ? "," : "") + R"({"serial":"a","size":1})";
  many += "]}";
  EXPECT_FALSE(ParseUnpackRequest(many).ok());
  // The start fields are bounded and typed as in boot.
  const std::string one = R"({"target_serial":"t","layers":[{"serial":"a","size":1}],)";
  EXPECT_TRUE(ParseUnpackRequest(one + R"("entropy":"00ff","time_ns":1,"restored":true})").ok());
  EXPECT_FALSE(ParseUnpackRequest(one + R"("entropy":"00FF"})").ok());
  EXPECT_FALSE(ParseUnpackRequest(one + R"("entropy":"0"})").ok());
  EXPECT_FALSE(ParseUnpackRequest(one + R"("entropy":")" + std::string(2 * kMaxBootEntropy + 2, 'a') + R"("})").ok());
  EXPECT_FALSE(ParseUnpackRequest(one + R"("time_ns":-1})").ok());
  EXPECT_FALSE(ParseUnpackRequest(one + R"("restored":"yes"})").ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":0,"diff_id":"sha256:AB","entries":1,"bytes":1})").ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":20,"diff_id":"sha256:)" + std::string(64, 'a') +
                                R"(","entries":1,"bytes":1})")
                   .ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":0,"diff_id":"sha256:)" + std::string(64, 'a') + R"("})").ok());
}

// ---- whiteouts and opaque directories against a model ----

// A layer entry: a file (content), a directory, a whiteout of a path, or an
// opaque marker in a directory. Directory names are d*, file names f*, so a
// path's type never changes between layers (replacements are covered by the
// VM test).
struct Op {
  enum Kind { kFile, kDir, kWhiteout, kOpaque } kind;
  std::string path;
  std::string content;
};

using Tree = std::map<std::string, std::string>;  // path → "D" or "F:<content>"

void EnsureDirs(Tree& t, const std::string& path) {
  for (size_t i = path.find('/'); i != std::string::npos; i = path.find('/', i + 1)) t[path.substr(0, i)] = "D";
}

void RemoveUnder(Tree& t, const std::string& dir, bool inclusive) {
  for (auto it = t.begin(); it != t.end();) {
    bool under = it->first.rfind(dir + "/", 0) == 0 || (inclusive && it->first == dir);
    it = under ? t.erase(it) : std::next(it);
  }
}

// The OCI rules: whiteouts and opaque markers hide the lower layers only;
// then the layer's own entries are added.
void ModelApply(Tree& t, const std::vector<Op>& layer) {
  for (const Op& op : layer) {
    if (op.kind == Op::kWhiteout) RemoveUnder(t, op.path, true);
    if (op.kind == Op::kOpaque) RemoveUnder(t, op.path, false);
  }
  for (const Op& op : layer) {
    if (op.kind == Op::kFile) {
      EnsureDirs(t, op.path);
      t[op.path] = "F:" + op.content;
    } else if (op.kind == Op::kDir || op.kind == Op::kOpaque) {
      EnsureDirs(t, op.path);
      t[op.path] = "D";
    }
  }
}


la_ssize_t AppendTo(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string LayerTar(const std::vector<Op>& layer) {
  std::string out;
  ArchiveWritePtr a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  archive_write_open(a.get(), &out, nullptr, AppendTo, nullptr);
  for (const Op& op : layer) {
    ArchiveEntryPtr e(archive_entry_new());
    std::string name = op.path;
    std::string data;
    if (op.kind == Op::kWhiteout) {
      size_t slash = name.rfind('/');
      name = slash == std::string::npos ? ".wh." + name : name.substr(0, slash + 1) + ".wh." + name.substr(slash + 1);
    } else if (op.kind == Op::kOpaque) {
      name += "/.wh..wh..opq";
    } else if (op.kind == Op::kFile) {
      data = op.content;
    }
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), op.kind == Op::kDir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e.get(), 0755);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    archive_write_header(a.get(), e.get());
    if (!data.empty()) archive_write_data(a.get(), data.data(), data.size());
  }
  archive_write_close(a.get());
  return out;
}

// Applies the layers with ApplyLayer in a child chrooted into root; "" or
// the error.
std::string ApplyInChroot(const std::string& root, const std::vector<std::vector<Op>>& layers,
                          std::vector<std::string>* diff_ids) {
  std::vector<UniqueFd> fds;
  std::vector<uint64_t> sizes;
  for (const auto& l : layers) {
    std::string tar = LayerTar(l);
    diff_ids->push_back("sha256:" + Sha256Hex(tar));
    UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
    if (!fd || !WriteAll(fd.get(), tar).ok()) return "memfd";
    sizes.push_back(tar.size());
    fds.push_back(std::move(fd));
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return "pipe";
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = ::fork();
  if (pid == 0) {
    rd.Reset();
    std::string out;
    if (::chroot(root.c_str()) != 0 || ::chdir("/") != 0) {
      out = "chroot failed";
    } else {
      for (size_t i = 0; i < fds.size(); ++i) {
        auto r = ApplyLayer(fds[i].get(), sizes[i], static_cast<uint32_t>(i));
        if (!r.ok()) {
          out = r.error().message();
          break;
        }
        if (r->diff_id != (*diff_ids)[i]) {
          out = "diff_id " + r->diff_id + " for layer " + std::to_string(i);
          break;
        }
      }
    }
    (void)WriteAll(wr.get(), out);
    ::_exit(0);
  }
  wr.Reset();
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "the child crashed";
  return out;
}

Tree ReadTree(const std::string& root) {
  Tree t;
  for (auto it = std::filesystem::recursive_directory_iterator(root); it != std::filesystem::recursive_directory_iterator(); ++it) {
    std::string rel = it->path().string().substr(root.size() + 1);
    if (it->is_directory()) {
      t[rel] = "D";
    } else {
      auto c = ReadFile(it->path().string());
      t[rel] = "F:" + (c.ok() ? *c : "?");
    }
  }
  return t;
}

TEST(ApplyLayer, WhiteoutsAndOpaqueDirectoriesFollowTheOciRules) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chroot, owners)";
  EXPECT_TRUE(rc::check("layers applied in a chroot equal the OCI model", [] {
    auto gen_dir = rc::gen::apply(
        [](const std::vector<std::string>& parts) {
          std::string p;
          for (const auto& c : parts) p += (p.empty() ? "" : "/") + c;
          return p;
        },
        rc::gen::resize(2, rc::gen::nonEmpty(rc::gen::container<std::vector<std::string>>(
                               rc::gen::element<std::string>("d1", "d2")))));
    auto gen_op = rc::gen::apply(
        [](int kind, const std::string& dir, int file, int content) {
          Op op;
          op.kind = static_cast<Op::Kind>(kind);
          op.path = dir;
          if (op.kind == Op::kFile || (op.kind == Op::kWhiteout && file % 2)) op.path += "/f" + std::to_string(file % 2);
          op.content = std::to_string(content);
          return op;
        },
        // element(), not inRange(): inRange scales with the (small) size.
        rc::gen::element(0, 1, 2, 3), gen_dir, rc::gen::element(0, 1, 2, 3), rc::gen::element(1, 2, 3, 4, 5));
    auto layers = *rc::gen::resize(
        4, rc::gen::nonEmpty(rc::gen::container<std::vector<std::vector<Op>>>(
               rc::gen::resize(6, rc::gen::container<std::vector<Op>>(gen_op)))));
    // A layer does not both whiteout a path and write it (or below it, or a
    // parent of it): no differ produces that.
    for (auto& layer : layers) {
      std::set<std::string> written;
      for (const Op& op : layer)
        if (op.kind != Op::kWhiteout) {
          std::string p = op.path;
          for (;;) {
            written.insert(p);
            size_t slash = p.rfind('/');
            if (slash == std::string::npos) break;
            p = p.substr(0, slash);
          }
        }
      std::vector<Op> kept;
      for (const Op& op : layer) {
        if (op.kind == Op::kWhiteout) {
          bool clash = written.count(op.path) > 0;
          for (const auto& w : written) clash = clash || w.rfind(op.path + "/", 0) == 0;
          if (clash) continue;
        }
        kept.push_back(op);
      }
      layer = kept;
    }
    char tmpl[] = "/tmp/msb-apply-layer-XXXXXX";
    RC_ASSERT(::mkdtemp(tmpl) != nullptr);
    std::string root = tmpl;
    std::vector<std::string> diff_ids;
    std::string error = ApplyInChroot(root, layers, &diff_ids);
    Tree got = error.empty() ? ReadTree(root) : Tree();
    std::filesystem::remove_all(root);
    RC_ASSERT(error == "");
    Tree want;
    for (const auto& l : layers) ModelApply(want, l);
    RC_ASSERT(got == want);
  }));
}

// Within one layer a directory's parents are checked once and remembered
// until something is deleted: here "a" and "a/b" are remembered, then "a" is
// replaced by a file and by a directory again, and "a/b/h" must get a fresh
// "a/b". Files are created with their mode (0755 from LayerTar), and an
// entry over an existing file replaces it.
TEST(ApplyLayer, ReplacingAParentForgetsTheParentsSeen) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chroot, owners)";
  char tmpl[] = "/tmp/msb-apply-layer-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  std::vector<std::vector<Op>> layers = {
      {{Op::kFile, "a/b/g", "g"}, {Op::kFile, "c", "old"}},
      {{Op::kFile, "a/b/g", "g2"}, {Op::kFile, "a", "file"}, {Op::kDir, "a", ""}, {Op::kFile, "a/b/h", "h"},
       {Op::kFile, "c", "new"}},
  };
  std::vector<std::string> diff_ids;
  std::string error = ApplyInChroot(root, layers, &diff_ids);
  Tree got = error.empty() ? ReadTree(root) : Tree();
  struct stat st{};
  int stat_r = ::stat((root + "/a/b/h").c_str(), &st);
  std::filesystem::remove_all(root);
  ASSERT_EQ(error, "");
  EXPECT_EQ(got, (Tree{{"a", "D"}, {"a/b", "D"}, {"a/b/h", "F:h"}, {"c", "F:new"}}));
  ASSERT_EQ(stat_r, 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

}  // namespace
}  // namespace msb::agent
