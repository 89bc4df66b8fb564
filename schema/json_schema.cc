// The JSON Schema of the Sandboxfile (sandboxfile.h JsonSchema), written
// from the key tables of keys.h that the loader reads with. It describes the
// file as written, before ${VAR} substitution: a value holding a '$' passes
// the checks of its grammar, which apply once it is substituted.
#include "schema/keys.h"
#include "schema/sandboxfile.h"

namespace msb::schema {
namespace {

using internal::Key;
using internal::Shape;
using internal::Value;
using json = nlohmann::json;

constexpr const char* kDraft = "http://json-schema.org/draft-07/schema#";
// A value still holding ${VAR} or $VAR: its grammar is checked after substitution.
constexpr const char* kInterpolated = "|\\$";

// What msb reads as text: every YAML scalar (a number or boolean is its text).
json ScalarTypes() { return json::array({"string", "number", "boolean"}); }

std::string Anchored(std::string_view pattern) { return "(?:" + std::string(pattern) + ")" + kInterpolated; }

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

json ValueSchema(const Value& v);

json PropertiesOf(const Key* keys, size_t n, json* required) {
  json props = json::object();
  for (size_t i = 0; i < n; ++i) {
    json s = ValueSchema(keys[i].value);
    s["description"] = std::string(keys[i].description);
    props[std::string(keys[i].name)] = std::move(s);
    if (keys[i].required) required->push_back(std::string(keys[i].name));
  }
  return props;
}

json ValueSchema(const Value& v) {
  switch (v.shape) {
    case Shape::kString: {
      json s = {{"type", ScalarTypes()}};
      if (!v.pattern.empty()) s["pattern"] = Anchored(v.pattern);
      return s;
    }
    case Shape::kScalar:
      return {{"type", ScalarTypes()}};
    case Shape::kBool:
      return {{"anyOf", json::array({{{"type", "boolean"}}, {{"$ref", "#/definitions/interpolated"}}})}};
    case Shape::kInteger:
      return {{"type", json::array({"integer", "string"})},
              {"minimum", v.min},
              {"maximum", v.max},
              {"pattern", Anchored("^[0-9]+$")}};
    case Shape::kSize:
      return {{"type", json::array({"integer", "string"})},
              {"minimum", CeilDiv(static_cast<uint64_t>(v.min), v.unit)},
              {"maximum", static_cast<uint64_t>(v.max) / v.unit},
              {"pattern", Anchored(internal::kSizePattern)}};
    case Shape::kDuration:
      return {{"type", "string"}, {"pattern", Anchored(internal::kDurationPattern)}};
    case Shape::kEnum: {
      json choices = json::array();
      for (size_t i = 0; i < v.choice_count; ++i) choices.push_back(std::string(v.choices[i]));
      json any = json::array({{{"enum", choices}}});
      if (!v.pattern.empty()) any.push_back({{"type", "string"}, {"pattern", std::string(v.pattern)}});
      any.push_back({{"$ref", "#/definitions/interpolated"}});
      return {{"anyOf", any}};
    }
    case Shape::kList:
      return {{"type", json::array({"array", "null"})}, {"items", ValueSchema(*v.item)}};
    case Shape::kCommand:
      return {{"anyOf", json::array({{{"type", "string"}, {"pattern", "\\S"}},
                                     {{"type", "array"}, {"minItems", 1}, {"items", {{"type", ScalarTypes()}}}}})}};
    case Shape::kMap: {
      json required = json::array();
      json s = {{"type", v.null_ok ? json::array({"object", "null"}) : json("object")},
                {"properties", PropertiesOf(v.keys, v.key_count, &required)},
                {"additionalProperties", false}};
      if (!required.empty()) s["required"] = std::move(required);
      if (v.extensions) s["patternProperties"] = {{"^x-", json::object()}};
      if (v.one_of_count > 0) {
        json one = json::array();
        for (size_t i = 0; i < v.one_of_count; ++i) one.push_back({{"required", {std::string(v.one_of[i])}}});
        s["oneOf"] = std::move(one);
      }
      return s;
    }
    case Shape::kMapOf:
      return {{"type", json::array({"object", "null"})},
              {"propertyNames", {{"pattern", std::string(v.key_pattern)}}},
              {"additionalProperties", ValueSchema(*v.item)}};
    case Shape::kEnvs:
      return {{"anyOf",
               json::array({{{"type", "array"},
                             {"items", {{"type", "string"}, {"pattern", Anchored(internal::kEnvItemPattern)}}}},
                            {{"type", "object"},
                             {"propertyNames", {{"pattern", std::string(internal::kEnvNamePattern)}}},
                             {"additionalProperties", {{"type", ScalarTypes()}}}},
                            {{"type", "null"}}})}};
    case Shape::kDependsOn: {
      json required = json::array();
      json entry = {{"type", json::array({"object", "null"})},
                    {"properties", PropertiesOf(internal::kDependKeys, std::size(internal::kDependKeys), &required)},
                    {"additionalProperties", false}};
      return {{"anyOf",
               json::array({{{"type", "array"},
                             {"items", {{"type", "string"}, {"pattern", std::string(internal::kNamePattern)}}}},
                            {{"type", "object"},
                             {"propertyNames", {{"pattern", std::string(internal::kNamePattern)}}},
                             {"additionalProperties", entry}},
                            {{"type", "null"}}})}};
    }
    case Shape::kRefused:
      return {{"not", json::object()}};
  }
  return json::object();
}

}  // namespace

nlohmann::json JsonSchema() {
  json s = ValueSchema(internal::kFileValue);
  s["$schema"] = kDraft;
  s["title"] = "Sandboxfile";
  s["description"] =
      "msb's Sandboxfile (docs/sandboxfile.md): the sandboxes of a project, their images, resources, "
      "mounts, ports and network. Written from msb's own key tables by `msb config --schema`.";
  s["definitions"] = {
      {"interpolated",
       {{"type", "string"},
        {"pattern", "\\$"},
        {"description", "A value holding ${VAR} or $VAR, checked once substituted."}}}};
  return s;
}

}  // namespace msb::schema
