#pragma once
// taskmoe-server's HTTP API (LibreTranslate's shapes; docs/serving.md, "API"): request parsing
// and validation, the handlers, JSON errors for every 4xx/5xx.

#include <algorithm>    // std::find, std::sort, std::transform
#include <cctype>       // std::tolower
#include <chrono>       // std::chrono
#include <cstddef>      // std::size_t
#include <cstdio>       // std::fprintf
#include <map>          // std::map
#include <memory>       // std::shared_ptr
#include <set>          // std::set
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

// The library first: <httplib.h> includes <resolv.h>, whose `_res` macro breaks Eigen's headers.
#include <taskmoe/translator_set.hpp>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "batcher.hpp"
#include "index_html.hpp"
#include "languages.hpp"
#include "metrics.hpp"

namespace taskmoe::server {

struct api_options {
  std::size_t max_chars = 5000;      // per text, in code points (LibreTranslate's char limit)
  std::size_t batch_limit = 128;     // texts per list q (LibreTranslate's batch limit)
  std::size_t max_body_bytes = 0;    // set from the two above in main
  int max_alternatives = 3;          // beam size - 1
  std::size_t max_lines = 1024;      // lines (sentences) per request: the queue's capacity
  std::chrono::milliseconds timeout{30000};
  std::set<std::string> api_keys;    // empty: no key needed
  bool access_log = false;
};

// A request the client got wrong (or one we refuse): answered as {"error": message}.
struct http_error {
  int status;
  std::string message;
};

inline std::string json_text(const nlohmann::json& j) {
  // replace: a byte sequence that is not UTF-8 (a path in a 404) must not throw while answering.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json_text({{"error", message}}), "application/json");
}

inline std::size_t count_code_points(std::string_view s) {
  std::size_t n = 0;
  for (const unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Nesting depth of a JSON text (brackets outside strings). Deep documents are refused before
// nlohmann builds them: copying or destroying a document recurses once per level, and 100,000
// levels of brackets would overflow an HTTP thread's stack.
inline std::size_t json_depth(std::string_view s) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

class api {
 public:
  api(const translator_set& set, batcher& b, metrics& m, api_options o)
      : set_(set), batcher_(b), metrics_(m), o_(std::move(o)) {
    nlohmann::json langs = nlohmann::json::array();
    std::map<std::string, std::vector<std::string>> targets;
    for (const auto& name : set_.tasks()) {
      const auto& t = set_.at(name).task();
      targets[t.source].push_back(t.target);
      targets[t.target];  // a language only translated into is still listed (no targets)
    }
    for (auto& [code, tgts] : targets) {
      std::sort(tgts.begin(), tgts.end());
      languages_.insert(code);
      langs.push_back({{"code", code}, {"name", language_name(code)}, {"targets", tgts}});
    }
    languages_json_ = json_text(langs);
  }

  void install(httplib::Server& svr) {
    svr.Post("/translate", [this](const httplib::Request& req, httplib::Response& res) { translate(req, res); });
    svr.Get("/languages", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(languages_json_, "application/json");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json_text({{"status", "ok"}, {"tasks", set_.tasks()}, {"queued", batcher_.queued()}}),
                      "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(index_html, "text/html; charset=utf-8");
    });
    svr.Post("/detect", [](const httplib::Request&, httplib::Response& res) {
      send_error(res, 400, "language detection is not supported by this server: give source explicitly");
    });
    // Known paths with the wrong method: 405 and Allow, not httplib's bare 404.
    const auto not_allowed = [](const char* allow) {
      return [allow](const httplib::Request& req, httplib::Response& res) {
        res.set_header("Allow", allow);
        send_error(res, 405, "method " + req.method + " not allowed on " + req.path + " (allowed: " + allow + ")");
      };
    };
    for (const char* p : {"/translate", "/detect"}) {
      svr.Get(p, not_allowed("POST"));
      svr.Put(p, not_allowed("POST"));
      svr.Delete(p, not_allowed("POST"));
      svr.Patch(p, not_allowed("POST"));
    }
    for (const char* p : {"/languages", "/health", "/metrics", "/"}) {
      svr.Post(p, not_allowed("GET, HEAD"));
      svr.Put(p, not_allowed("GET, HEAD"));
      svr.Delete(p, not_allowed("GET, HEAD"));
      svr.Patch(p, not_allowed("GET, HEAD"));
    }
    // CORS preflight: browser extensions and web apps on other origins call the API (as with
    // LibreTranslate, which allows any origin).
    svr.Options(R"(.*)", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
    svr.set_default_headers({{"Access-Control-Allow-Origin", "*"},
                             {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                             {"Access-Control-Allow-Methods", "GET, POST"}});

    // Every error status gets a JSON body, including httplib's own (404, 413, 400 for broken HTTP).
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message;
      switch (res.status) {
        case 404: message = "not found: " + req.path + " (the API: POST /translate, GET /languages, GET /health, GET /metrics, GET /)"; break;
        case 413: message = "request too large (at most " + std::to_string(o_.max_body_bytes) + " bytes of body; " +
                            "form-urlencoded bodies at most 8192 bytes: send JSON for more)"; break;
        case 414: message = "request URI too long"; break;
        case 400: message = "bad request (malformed HTTP)"; break;
        default: message = "HTTP " + std::to_string(res.status);
      }
      send_error(res, res.status, message);
      return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::fprintf(stderr, "taskmoe-server: internal error: %s\n", what.c_str());
      send_error(res, 500, "internal error: " + what);
    });
    // Counted in the post-routing handler, which runs before the response is written: the logger
    // runs after, so a client that scraped /metrics right after its answer could miss itself.
    svr.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      metrics_.requests.add("endpoint=\"" + endpoint_of(req) + "\",status=\"" + std::to_string(res.status) + "\"");
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      if (o_.access_log)
        std::fprintf(stderr, "taskmoe-server: %s %s %s %d %zu\n", req.remote_addr.c_str(), req.method.c_str(),
                     endpoint_of(req).c_str(), res.status, res.body.size());
    });
  }

 private:
  static std::string endpoint_of(const httplib::Request& req) {
    static const std::set<std::string> known = {"/translate", "/languages", "/health", "/metrics", "/", "/detect"};
    return known.count(req.path) ? req.path : "other";
  }

  // A request field, from the JSON object or the form / query parameters. JSON null = absent.
  struct fields {
    const nlohmann::json* object = nullptr;
    const httplib::Request* form = nullptr;

    nlohmann::json get(const char* name) const {
      if (object) {
        const auto it = object->find(name);
        return it == object->end() ? nlohmann::json() : *it;
      }
      if (form->has_param(name)) return form->get_param_value(name);
      if (form->has_file(name)) return form->get_file_value(name).content;
      return nullptr;
    }
  };

  static std::string media_type(const httplib::Request& req) {
    std::string t = req.get_header_value("Content-Type");
    t = t.substr(0, t.find(';'));
    while (!t.empty() && t.back() == ' ') t.pop_back();
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return t;
  }

  static std::string type_name(const nlohmann::json& j) { return j.type_name(); }

  static std::string check_text(const nlohmann::json& v, const char* name, bool from_form) {
    if (!v.is_string())
      throw http_error{400, std::string("Invalid request: ") + name + " must be a string, not " + type_name(v)};
    std::string s = v.get<std::string>();
    if (from_form) {  // JSON strings were checked by the parser; form fields are raw bytes
      const std::size_t bad = tokenizer::find_invalid_utf8(s);
      if (bad != std::string::npos)
        throw http_error{400, std::string("Invalid request: ") + name + " is not valid UTF-8 (byte " +
                                  std::to_string(bad) + ")"};
    }
    return s;
  }

  int parse_alternatives(const nlohmann::json& v) const {
    long long n = 0;
    if (v.is_null()) return 0;
    if (v.is_number_integer()) {
      n = v.get<long long>();
    } else if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<long long>(v.get<double>()))) {
      n = static_cast<long long>(v.get<double>());
    } else if (v.is_string()) {  // forms send "3"; LibreTranslate runs int() on it
      const std::string s = v.get<std::string>();
      std::size_t used = 0;
      try {
        n = std::stoll(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (s.empty() || used != s.size())
        throw http_error{400, "Invalid request: alternatives parameter is not a number"};
    } else {
      throw http_error{400, "Invalid request: alternatives parameter is not a number"};
    }
    if (n < 0) n = 0;  // as LibreTranslate: max(0, alternatives)
    if (n > o_.max_alternatives)
      throw http_error{400, "Invalid request: alternatives parameter must be <= " + std::to_string(o_.max_alternatives)};
    return static_cast<int>(n);
  }

  void translate(const httplib::Request& req, httplib::Response& res) {
    // Counted out on every path, also when an unexpected exception goes to the 500 handler.
    struct in_flight_guard {
      metrics& m;
      clock::time_point t0 = clock::now();
      explicit in_flight_guard(metrics& m_) : m(m_) { ++m.in_flight; }
      ~in_flight_guard() {
        --m.in_flight;
        m.latency.observe(std::chrono::duration<double>(clock::now() - t0).count());
      }
    } guard(metrics_);
    try {
      translate_checked(req, res);
    } catch (const http_error& e) {
      send_error(res, e.status, e.message);
    }
  }

  void translate_checked(const httplib::Request& req, httplib::Response& res) {
    const std::string type = media_type(req);
    nlohmann::json body;
    fields f;
    const bool json = type == "application/json" || (type.size() > 5 && type.compare(type.size() - 5, 5, "+json") == 0);
    if (json) {
      constexpr std::size_t max_depth = 16;  // a request needs 2 (an object holding a list)
      if (json_depth(req.body) > max_depth)
        throw http_error{400, "Invalid request: JSON nested deeper than " + std::to_string(max_depth) + " levels"};
      try {
        body = nlohmann::json::parse(req.body);
      } catch (const nlohmann::json::exception& e) {
        throw http_error{400, std::string("Invalid request: the body is not valid JSON: ") + e.what()};
      }
      if (!body.is_object()) throw http_error{400, "Invalid request: the JSON body must be an object, not " + type_name(body)};
      f.object = &body;
    } else if (type.empty() || type == "application/x-www-form-urlencoded" || type == "multipart/form-data") {
      f.form = &req;
    } else {
      throw http_error{415, "unsupported Content-Type '" + type +
                                "': send application/json, application/x-www-form-urlencoded or multipart/form-data"};
    }
    const bool form = !json;

    if (!o_.api_keys.empty()) {
      const nlohmann::json key = f.get("api_key");
      if (key.is_null() || (key.is_string() && key.get<std::string>().empty()))
        throw http_error{400, "Invalid request: missing api_key parameter (this server needs an API key; "
                              "ask its operator for one)"};
      if (!key.is_string() || !o_.api_keys.count(key.get<std::string>())) throw http_error{403, "Invalid API key"};
    }

    // q: a string or a list of strings, as LibreTranslate.
    const nlohmann::json q = f.get("q");
    std::vector<std::string> texts;
    const bool list = q.is_array();
    if (q.is_null() || (q.is_string() && q.get<std::string>().empty()) || (list && q.empty()))
      throw http_error{400, "Invalid request: missing q parameter"};
    if (list) {
      if (q.size() > o_.batch_limit)
        throw http_error{400, "Invalid request: request (" + std::to_string(q.size()) + ") exceeds text limit (" +
                                  std::to_string(o_.batch_limit) + ")"};
      for (std::size_t i = 0; i < q.size(); ++i) {
        if (!q[i].is_string())
          throw http_error{400, "Invalid request: q must be a string or a list of strings (item " + std::to_string(i) +
                                    " is " + type_name(q[i]) + ")"};
        texts.push_back(q[i].get<std::string>());
      }
    } else if (q.is_string()) {
      texts.push_back(check_text(q, "q", form));
    } else {
      throw http_error{400, "Invalid request: q must be a string or a list of strings, not " + type_name(q)};
    }
    for (const auto& t : texts) {
      const std::size_t chars = count_code_points(t);
      if (chars > o_.max_chars)
        throw http_error{400, "Invalid request: request (" + std::to_string(chars) + ") exceeds text limit (" +
                                  std::to_string(o_.max_chars) + ")"};
    }

    const nlohmann::json src = f.get("source"), tgt = f.get("target");
    if (src.is_null() || (src.is_string() && src.get<std::string>().empty()))
      throw http_error{400, "Invalid request: missing source parameter"};
    if (tgt.is_null() || (tgt.is_string() && tgt.get<std::string>().empty()))
      throw http_error{400, "Invalid request: missing target parameter"};
    const std::string source = check_text(src, "source", form), target = check_text(tgt, "target", form);
    const nlohmann::json fmt = f.get("format");
    if (!fmt.is_null()) {
      const std::string format = check_text(fmt, "format", form);
      if (format == "html")
        throw http_error{400, "html format is not supported: this server translates plain text only "
                              "(send format \"text\")"};
      if (format != "text" && !format.empty()) throw http_error{400, format + " format is not supported"};
    }
    const int alternatives = parse_alternatives(f.get("alternatives"));

    if (source == "auto")
      throw http_error{400, "Invalid request: source \"auto\" (language detection) is not supported by this "
                            "server; give the source language (GET /languages lists them)"};
    if (!languages_.count(source)) throw http_error{400, source + " is not supported"};
    if (!languages_.count(target)) throw http_error{400, target + " is not supported"};
    const translator* t = set_.find(source, target);
    if (!t)
      throw http_error{400, language_name(target) + " (" + target + ") is not available as a target language from " +
                                language_name(source) + " (" + source + ")"};

    // Lines are translated one by one (what the model and taskmoe-translate do) and joined again.
    std::vector<std::vector<int>> pieces;
    std::vector<std::size_t> lines_per_text;
    const std::size_t max_pieces = t->max_input_length();
    bool truncated = false;
    for (const auto& text : texts) {
      std::size_t n = 0;
      std::size_t start = 0;
      for (;;) {
        const std::size_t nl = text.find('\n', start);
        std::string_view line(text.data() + start, (nl == std::string::npos ? text.size() : nl) - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        try {
          pieces.push_back(t->encode(line));
        } catch (const invalid_argument_error& e) {  // not UTF-8 (a form field)
          throw http_error{400, std::string("Invalid request: ") + e.what()};
        }
        truncated = truncated || pieces.back().size() > max_pieces;
        ++n;
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      lines_per_text.push_back(n);
    }

    if (pieces.size() > o_.max_lines)
      throw http_error{413, "Invalid request: " + std::to_string(pieces.size()) + " lines, more than this server "
                                "queues at once (" + std::to_string(o_.max_lines) + ", --queue)"};
    const auto j = std::make_shared<job>(t, alternatives + 1, std::move(pieces), clock::now() + o_.timeout);
    switch (batcher_.submit(j)) {
      case submit_status::ok: break;
      case submit_status::queue_full:
        metrics_.rejected.add("reason=\"queue_full\"");
        res.set_header("Retry-After", "1");
        throw http_error{503, "Slowdown: the server is busy (translation queue full); retry later"};
      case submit_status::stopping:
        metrics_.rejected.add("reason=\"stopping\"");
        throw http_error{503, "the server is shutting down"};
    }
    if (!j->wait()) {
      metrics_.rejected.add("reason=\"timeout\"");
      res.set_header("Retry-After", "1");
      throw http_error{503, "timed out after " + std::to_string(o_.timeout.count()) +
                                " ms waiting for translation (the server is overloaded); retry later"};
    }
    if (j->error) {
      try {
        std::rethrow_exception(j->error);
      } catch (const invalid_argument_error& e) {
        throw http_error{400, std::string("Invalid request: ") + e.what()};
      } catch (const std::exception& e) {
        std::fprintf(stderr, "taskmoe-server: translation failed: %s\n", e.what());
        throw http_error{500, std::string("Cannot translate text: ") + e.what()};
      }
    }

    // Hypothesis k of a text: its lines' k-th hypotheses (a line with fewer: its last), joined.
    nlohmann::json translated = nlohmann::json::array(), alts = nlohmann::json::array();
    std::size_t line = 0;
    for (const std::size_t n : lines_per_text) {
      const auto joined = [&](std::size_t k) {
        std::string s;
        for (std::size_t i = 0; i < n; ++i) {
          const auto& h = j->results[line + i].hypotheses;
          if (i) s += '\n';
          if (!h.empty()) s += h[std::min(k, h.size() - 1)].text;
        }
        return s;
      };
      const std::string best = joined(0);
      std::vector<std::string> others;
      for (int k = 1; k <= alternatives; ++k) {
        std::string a = joined(static_cast<std::size_t>(k));
        if (a != best && std::find(others.begin(), others.end(), a) == others.end()) others.push_back(std::move(a));
      }
      translated.push_back(best);
      alts.push_back(others);
      line += n;
    }
    nlohmann::json out;
    out["translatedText"] = list ? translated : translated[0];
    if (alternatives > 0) out["alternatives"] = list ? alts : alts[0];
    if (truncated) res.set_header("X-Taskmoe-Truncated", "1");
    res.set_content(json_text(out), "application/json");
  }

  const translator_set& set_;
  batcher& batcher_;
  metrics& metrics_;
  api_options o_;
  std::set<std::string> languages_;
  std::string languages_json_;
};

}  // namespace taskmoe::server
