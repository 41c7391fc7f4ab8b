#pragma once
// English names of language codes for /languages (LibreTranslate answers code + name). A code
// not in the table is named by itself: the model's task list, not this table, decides what is
// served.

#include <string>       // std::string
#include <string_view>  // std::string_view

namespace taskmoe::server {

inline std::string language_name(std::string_view code) {
  struct entry {
    const char* code;
    const char* name;
  };
  static constexpr entry names[] = {
      {"ar", "Arabic"},    {"az", "Azerbaijani"}, {"bg", "Bulgarian"},  {"bn", "Bengali"},
      {"ca", "Catalan"},   {"cs", "Czech"},       {"da", "Danish"},     {"de", "German"},
      {"el", "Greek"},     {"en", "English"},     {"eo", "Esperanto"},  {"es", "Spanish"},
      {"et", "Estonian"},  {"fa", "Persian"},     {"fi", "Finnish"},    {"fr", "French"},
      {"ga", "Irish"},     {"he", "Hebrew"},      {"hi", "Hindi"},      {"hu", "Hungarian"},
      {"id", "Indonesian"}, {"it", "Italian"},    {"ja", "Japanese"},   {"ko", "Korean"},
      {"lt", "Lithuanian"}, {"lv", "Latvian"},    {"ms", "Malay"},      {"nb", "Norwegian"},
      {"nl", "Dutch"},     {"pl", "Polish"},      {"pt", "Portuguese"}, {"ro", "Romanian"},
      {"ru", "Russian"},   {"sk", "Slovak"},      {"sl", "Slovenian"},  {"sq", "Albanian"},
      {"sv", "Swedish"},   {"th", "Thai"},        {"tl", "Tagalog"},    {"tr", "Turkish"},
      {"uk", "Ukrainian"}, {"ur", "Urdu"},        {"vi", "Vietnamese"}, {"zh", "Chinese"},
  };
  for (const auto& e : names)
    if (code == e.code) return e.name;
  return std::string(code);
}

}  // namespace taskmoe::server
