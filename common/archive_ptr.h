// Owning handles for libarchive's readers, writers and entries. A header of
// its own (not common/c_ptr.h) because including it pulls in <archive.h>:
// only code that links libarchive includes it, agentd among them.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <string>

#include "common/c_ptr.h"

namespace msb {

// archive_read_free/archive_write_free answer a status nobody can act on in a
// destructor; CPtr wants a void function.
inline void FreeArchiveRead(archive* a) { archive_read_free(a); }
inline void FreeArchiveWrite(archive* a) { archive_write_free(a); }
inline void FreeArchiveEntry(archive_entry* e) { archive_entry_free(e); }

using ArchiveReadPtr = CPtr<archive, FreeArchiveRead>;
using ArchiveWritePtr = CPtr<archive, FreeArchiveWrite>;
using ArchiveEntryPtr = CPtr<archive_entry, FreeArchiveEntry>;

// The message of a's last error. libarchive leaves it null for some failures
// (a tar stream that ends inside a GNU long-name entry, among others), so it
// is never put in a std::string directly.
inline std::string ArchiveErrorString(archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

}  // namespace msb
