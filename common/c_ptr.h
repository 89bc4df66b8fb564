// unique_ptr aliases with deleters for the C handles msb uses. Include only the
// ones whose library the including target links; each block is guarded by the
// library's own header having been included first.
#pragma once

#include <memory>

namespace msb {

template <typename T, void (*Free)(T*)>
struct CDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};

template <typename T, void (*Free)(T*)>
using CPtr = std::unique_ptr<T, CDeleter<T, Free>>;

}  // namespace msb
