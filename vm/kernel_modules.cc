// Module dependency order from .modinfo (see kernel_modules.h).
#include "vm/kernel_modules.h"

#include <elf.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "common/io.h"

namespace msb::vm {
namespace {

std::string Normalise(std::string name) {
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

Error BadElf(const std::string& path, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, path + " is not a usable kernel module: " + what);
}

}  // namespace

Result<std::vector<std::string>> ModuleDepends(std::string_view elf, const std::string& path) {
  Elf64_Ehdr eh;
  if (elf.size() < sizeof eh) return BadElf(path, "shorter than an ELF header");
  std::memcpy(&eh, elf.data(), sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB) {
    return BadElf(path, "not a 64-bit little-endian ELF file");
  }
  if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shoff > elf.size() ||
      uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr) > elf.size() - eh.e_shoff || eh.e_shstrndx >= eh.e_shnum) {
    return BadElf(path, "section header table out of bounds");
  }
  auto section = [&](unsigned i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, elf.data() + eh.e_shoff + uint64_t{i} * sizeof sh, sizeof sh);
    return sh;
  };
  auto bytes = [&](const Elf64_Shdr& sh) -> std::string_view {
    if (sh.sh_type == SHT_NOBITS || sh.sh_offset > elf.size() || sh.sh_size > elf.size() - sh.sh_offset) {
      return {};
    }
    return elf.substr(sh.sh_offset, sh.sh_size);
  };
  std::string_view names = bytes(section(eh.e_shstrndx));
  for (unsigned i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh = section(i);
    if (sh.sh_name >= names.size()) continue;
    std::string_view name = names.substr(sh.sh_name);
    name = name.substr(0, name.find('\0'));
    if (name != ".modinfo") continue;
    std::string_view info = bytes(sh);
    std::vector<std::string> deps;
    while (!info.empty()) {
      std::string_view entry = info.substr(0, info.find('\0'));
      info.remove_prefix(std::min(info.size(), entry.size() + 1));
      if (entry.substr(0, 8) != "depends=") continue;
      entry.remove_prefix(8);
      while (!entry.empty()) {
        std::string_view dep = entry.substr(0, entry.find(','));
        entry.remove_prefix(std::min(entry.size(), dep.size() + 1));
        if (!dep.empty()) deps.push_back(Normalise(std::string(dep)));
      }
    }
    return deps;
  }
  return BadElf(path, "no .modinfo section");
}

Result<std::vector<std::string>> ModuleLoadOrder(const std::string& modules_dir,
                                                 const std::vector<std::string>& wanted) {
  std::map<std::string, std::string> files;  // normalised name -> path
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(modules_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() == ".ko" && it->is_regular_file(ec)) {
      files.emplace(Normalise(p.stem().string()), p.string());
    }
  }
  if (ec) return Error(ErrorCode::kIo, "cannot list kernel modules in " + modules_dir + ": " + ec.message());

  std::vector<std::string> order;
  std::set<std::string> done;
  std::set<std::string> visiting;
  std::function<Status(const std::string&, const std::string&)> visit =
      [&](const std::string& name, const std::string& needed_by) -> Status {
    if (done.count(name) != 0) return OkStatus();
    if (visiting.count(name) != 0) {
      return Error(ErrorCode::kInvalidArgument, "kernel modules in " + modules_dir +
                                                    " depend on each other in a cycle through " + name);
    }
    auto f = files.find(name);
    if (f == files.end()) {
      return Error(ErrorCode::kNotFound, "kernel module " + name + (needed_by.empty() ? "" : " (needed by " + needed_by + ")") +
                                             " is not in " + modules_dir);
    }
    visiting.insert(name);
    MSB_TRY(std::string bytes, ReadFile(f->second));
    MSB_TRY(auto deps, ModuleDepends(bytes, f->second));
    for (const auto& d : deps) MSB_TRY_STATUS(visit(d, name));
    visiting.erase(name);
    done.insert(name);
    order.push_back(f->second);
    return OkStatus();
  };
  for (const auto& w : wanted) MSB_TRY_STATUS(visit(Normalise(w), ""));
  return order;
}

}  // namespace msb::vm
