/* Keeps libarchive's format table out of the static agentd.
 *
 * The pax writer calls __archive_write_entry_filetype_unsupported(), which
 * libarchive defines in archive_write_set_format.o next to the table of
 * every writer (7zip, iso9660, xar → libxml2, zip → nettle ...). Defining the
 * function here satisfies the reference, so the linker never loads that
 * member and agentd carries only the tar code (docs/design.md "agentd").
 * Same behaviour as libarchive 3.6's own definition: an error naming the
 * entry. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>

/* libarchive's ARCHIVE_ERRNO_FILE_FORMAT is EILSEQ on Linux (archive_private.h). */
#define EFTYPE_OR_EINVAL EILSEQ

void __archive_write_entry_filetype_unsupported(struct archive* a, struct archive_entry* entry,
                                                const char* format) {
  const char* name = NULL;
  switch (archive_entry_filetype(entry)) {
    case AE_IFSOCK: name = "sockets"; break;
    case AE_IFCHR: name = "character devices"; break;
    case AE_IFBLK: name = "block devices"; break;
    case AE_IFIFO: name = "named pipes"; break;
    case AE_IFLNK: name = "symbolic links"; break;
    case AE_IFDIR: name = "directories"; break;
    default: break;
  }
  if (name != NULL)
    archive_set_error(a, EFTYPE_OR_EINVAL, "%s: %s format cannot archive %s",
                      archive_entry_pathname(entry), format, name);
  else
    archive_set_error(a, EFTYPE_OR_EINVAL, "%s: unsupported filetype",
                      archive_entry_pathname(entry));
}
