// Secret values from their host sources, and the transfer text between msb
// and the supervisor: round trips, every malformed form refused, and source
// errors that name the source without the value.
#include "secrets/transfer.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace msb::secrets {
namespace {

TEST(TransferTest, RoundTripsValuesWithAnyBytes) {
  std::string binary("a\0b\n\xff ", 6);
  std::string text = EncodeValues({{"TOKEN", "s3cr3t"}, {"BIN", binary}});
  EXPECT_EQ(text.find("s3cr3t"), std::string::npos);  // encoded, not raw
  auto got = DecodeValues(text);
  ASSERT_TRUE(got.ok()) << got.error().message();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ(got->at("TOKEN").view(), "s3cr3t");
  EXPECT_EQ(got->at("BIN").view(), binary);
  EXPECT_TRUE(DecodeValues("")->empty());
}

RC_GTEST_PROP(TransferProp, RoundTrip, (std::string value)) {
  RC_PRE(value.size() <= kMaxSecretBytes);
  auto got = DecodeValues(EncodeValues({{"V_1", value}}));
  RC_ASSERT(got.ok());
  RC_ASSERT(std::string(got->at("V_1").view()) == value);
}

RC_GTEST_PROP(TransferProp, AnyTextDecodesOrFailsCleanly, (std::string text)) {
  auto got = DecodeValues(text);
  if (got.ok()) {
    for (const auto& [name, v] : *got) RC_ASSERT(v.size() <= kMaxSecretBytes);
  }
}

TEST(TransferTest, RefusesMalformedText) {
  for (const char* bad : {"TOKEN c2VjcmV0", "TOKEN\n", "1X c2VjcmV0\n", "A-B c2VjcmV0\n",
                          "T c2VjcmV0\nT c2VjcmV0\n", "T !!!\n", " c2VjcmV0\n"}) {
    EXPECT_FALSE(DecodeValues(bad).ok()) << bad;
  }
}

TEST(TransferTest, SourceErrorsNameTheSourceNotTheValue) {
  ::unsetenv("MSB_TRANSFER_TEST_UNSET");
  auto unset = ReadSecretSource("env", "MSB_TRANSFER_TEST_UNSET");
  ASSERT_FALSE(unset.ok());
  EXPECT_NE(unset.error().message().find("MSB_TRANSFER_TEST_UNSET is not set"), std::string::npos);
  ::setenv("MSB_TRANSFER_TEST_SET", "v4lue", 1);
  auto set = ReadSecretSource("env", "MSB_TRANSFER_TEST_SET");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->view(), "v4lue");
  ::setenv("MSB_TRANSFER_TEST_EMPTY", "", 1);
  EXPECT_FALSE(ReadSecretSource("env", "MSB_TRANSFER_TEST_EMPTY").ok());

  auto dir = std::filesystem::temp_directory_path() / ("msb-transfer-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto missing = ReadSecretSource("file", (dir / "missing").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("from_file " + (dir / "missing").string()), std::string::npos);
  std::ofstream(dir / "empty").close();
  auto empty = ReadSecretSource("file", (dir / "empty").string());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("is empty"), std::string::npos);
  std::ofstream(dir / "token") << "filev4lue\n";
  auto file = ReadSecretSource("file", (dir / "token").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->view(), "filev4lue");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace msb::secrets
