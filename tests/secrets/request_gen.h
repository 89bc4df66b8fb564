// RapidCheck generators of valid HTTP/1.1 requests, shared by the parser and
// substitution properties. A generated request serializes to bytes the
// parser reads back the same: token names, field values without leading or
// trailing whitespace, framing fields that agree with the body.
#pragma once

#include <rapidcheck.h>

#include <string>
#include <vector>

#include "secrets/http_request.h"

namespace msb::secrets {

inline rc::Gen<std::string> TokenGen() {
  return rc::gen::nonEmpty(rc::gen::container<std::string>(
      rc::gen::element('a', 'b', 'z', 'A', 'Q', '0', '9', '-', '_', '.', '!', '~', '*', '+', '#', '|')));
}

inline rc::Gen<std::string> FieldValueGen() {
  // Visible characters and inner spaces; never leading or trailing whitespace.
  return rc::gen::map(
      rc::gen::container<std::string>(
          rc::gen::oneOf(rc::gen::inRange<char>(0x21, 0x7f), rc::gen::element(' ', '\t'),
                         rc::gen::map(rc::gen::inRange<int>(0x80, 0x100), [](int c) { return static_cast<char>(c); }))),
      [](std::string v) {
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
        return v;
      });
}

inline rc::Gen<HttpHeader> HeaderGen() {
  return rc::gen::suchThat(rc::gen::build<HttpHeader>(rc::gen::set(&HttpHeader::name, TokenGen()),
                                                      rc::gen::set(&HttpHeader::value, FieldValueGen())),
                           [](const HttpHeader& h) {
                             for (const char* framing : {"content-length", "transfer-encoding", "expect", "host"}) {
                               if (EqualsIgnoreCase(h.name, framing)) return false;
                             }
                             return true;
                           });
}

inline rc::Gen<HttpRequest> RequestGen() {
  return rc::gen::exec([] {
    HttpRequest r;
    r.method = *rc::gen::element<std::string>("GET", "POST", "PUT", "PATCH", "DELETE", "X-CUSTOM");
    r.target = "/" + *rc::gen::container<std::string>(rc::gen::inRange<char>(0x21, 0x7f));
    while (r.target.find('#') != std::string::npos) r.target.erase(r.target.find('#'), 1);
    r.version = *rc::gen::element<std::string>("HTTP/1.1", "HTTP/1.0");
    r.headers = *rc::gen::container<std::vector<HttpHeader>>(HeaderGen());
    if (r.headers.size() > 20) r.headers.resize(20);
    r.headers.insert(r.headers.begin() + static_cast<ptrdiff_t>(*rc::gen::inRange<size_t>(0, r.headers.size() + 1)),
                     HttpHeader{"Host", "api.example.com"});
    r.body = *rc::gen::container<std::string>(rc::gen::arbitrary<char>());
    r.chunked = r.version == "HTTP/1.1" && *rc::gen::arbitrary<bool>();
    if (r.chunked) {
      r.headers.push_back({"Transfer-Encoding", "chunked"});
      r.trailers = *rc::gen::container<std::vector<HttpHeader>>(HeaderGen());
      if (r.trailers.size() > 5) r.trailers.resize(5);
    } else if (!r.body.empty() || *rc::gen::arbitrary<bool>()) {
      r.headers.push_back({"Content-Length", std::to_string(r.body.size())});
    }
    return r;
  });
}

}  // namespace msb::secrets
