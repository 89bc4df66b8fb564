// Owning handles for libarchive's readers, writers and entries. A header of
// its own (not common/c_ptr.h) because including it pulls in <archive.h>:
// only code that links libarchive includes it, agentd among them.
#pragma once

#include <archive.h>
#include <archive_entry.h>

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

}  // namespace msb
