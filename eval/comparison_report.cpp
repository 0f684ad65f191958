// The report is assembled from figures built once (SVG strings) and two renderers that lay them
// out: HTML inlines them, Markdown links to the same SVGs written beside it.
#include "eval/comparison_report.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "eval/svg_chart.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;

std::string fmt(double v, const char* f = "%.4g") {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string file_stem(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_';
  return out.empty() ? "run" : out;
}

struct Figure {
  std::string file;  ///< name of its .svg beside the report
  std::string caption;
  std::string svg;
};

struct RunFigures {
  Figure heatmap, rank_load;
};

// ---- figures ------------------------------------------------------------------------------------

double max_relative_load(const ComparisonReport& report) {
  double m = 1.0;
  for (const auto& run : report.runs)
    for (const auto& l : run.eval.layers) m = std::max(m, l.routing.max_over_mean);
  return m;
}

Figure heatmap_of(const ComparisonRun& run, double scale_max) {
  Heatmap h;
  h.title = run.name + ": expert load per layer";
  h.row_label = "MoE layer";
  h.col_label = "expert";
  h.legend_label = "load / mean";
  h.min = 0;
  h.max = scale_max;
  const auto& e = run.eval;
  for (int64_t x = 0; x < e.num_experts; ++x) h.cols.push_back(std::to_string(x));
  for (const auto& l : e.layers) {
    h.rows.push_back(std::to_string(l.layer));
    const double total = double(l.routing.num_assignments - l.routing.num_dropped);
    const double mean = total / double(std::max<int64_t>(e.num_experts, 1));
    std::vector<double> row;
    std::vector<std::string> tips;
    for (int64_t x = 0; x < e.num_experts; ++x) {
      const double tokens = double(l.routing.expert_tokens[size_t(x)]);
      row.push_back(mean > 0 ? tokens / mean : 0.0);
      tips.push_back("layer " + std::to_string(l.layer) + ", expert " + std::to_string(x) + ": " +
                     fmt(tokens, "%.0f") + " tokens (" + fmt(row.back(), "%.2f") + "x mean)");
    }
    h.values.push_back(std::move(row));
    h.tips.push_back(std::move(tips));
  }
  h.show_values = e.num_experts <= 16;
  return {"heatmap_" + file_stem(run.name) + ".svg", h.title, svg_heatmap(h)};
}

Figure rank_load_of(const ComparisonRun& run) {
  BarChart b;
  b.title = run.name + ": tokens received per rank";
  b.css_class = "bars rank-load";
  b.x_label = "rank (EP " + std::to_string(run.eval.expert_parallel) + ")";
  b.y_label = "tokens received";
  for (const auto& r : run.eval.ranks) {
    b.labels.push_back(std::to_string(r.rank));
    b.values.push_back(double(r.tokens_received));
  }
  return {"rank_load_" + file_stem(run.name) + ".svg", b.title, svg_bar_chart(b)};
}

template <typename F>
Figure per_layer_lines(const ComparisonReport& report, const std::string& file,
                       const std::string& title, const std::string& id, const std::string& y_label,
                       F value) {
  LineChart c;
  c.title = title;
  c.css_class = "lines";
  c.x_label = "MoE layer";
  c.y_label = y_label;
  c.integer_x = true;
  for (const auto& run : report.runs) {
    LineChart::Series s{run.name, {}, {}};
    for (const auto& l : run.eval.layers) {
      s.x.push_back(double(l.layer));
      s.y.push_back(value(l));
    }
    c.series.push_back(std::move(s));
  }
  std::string svg = svg_line_chart(c);
  svg.insert(svg.find("<svg ") + 5, "id=\"" + id + "\" ");
  return {file, title, svg};
}

Figure loss_figure(const ComparisonReport& report) {
  LineChart c;
  c.title = "training loss";
  c.x_label = "step";
  c.y_label = "loss (mean over ranks)";
  c.integer_x = true;
  for (const auto& curve : report.curves) c.series.push_back({curve.name, curve.steps, curve.loss});
  std::string svg = svg_line_chart(c);
  svg.insert(svg.find("<svg ") + 5, "id=\"loss-curves\" ");
  return {"loss_curves.svg", c.title, svg};
}

struct Figures {
  std::vector<RunFigures> runs;
  Figure entropy, imbalance;
  std::optional<Figure> loss;
};

Figures build_figures(const ComparisonReport& report) {
  Figures f;
  const double scale = max_relative_load(report);
  for (const auto& run : report.runs) f.runs.push_back({heatmap_of(run, scale), rank_load_of(run)});
  f.entropy = per_layer_lines(report, "entropy_per_layer.svg", "routing entropy per layer",
                              "entropy-per-layer", "entropy (nats)",
                              [](const LayerReport& l) { return l.routing.token_entropy; });
  f.imbalance = per_layer_lines(report, "imbalance_per_layer.svg", "max / mean load per layer",
                                "imbalance-per-layer", "max / mean",
                                [](const LayerReport& l) { return l.routing.max_over_mean; });
  if (!report.curves.empty()) f.loss = loss_figure(report);
  return f;
}

// ---- the comparison table (shared by both renderers)
// ----------------------------------------------

// The quality column(s) follow the task: perplexity for causal LMs, accuracy and macro-F1 for
// classifiers (write_report refuses a report that mixes the two).
bool classifies(const ComparisonReport& report) {
  return !report.runs.empty() && report.runs.front().eval.classification();
}

const std::vector<std::string> kRoutingColumns = {"run",
                                                  "router",
                                                  "EP",
                                                  "parameters",
                                                  "router params",
                                                  "active",
                                                  "router µs/token",
                                                  "router share",
                                                  "entropy",
                                                  "utilisation",
                                                  "max/mean",
                                                  "CV",
                                                  "drop rate",
                                                  "rank max/mean"};

std::vector<std::string> comparison_columns(const ComparisonReport& report) {
  std::vector<std::string> columns = kRoutingColumns;
  if (classifies(report))
    columns.insert(columns.end(), {"accuracy", "macro-F1"});
  else
    columns.push_back("perplexity");
  return columns;
}

std::vector<std::string> comparison_row(const ComparisonRun& run) {
  const EvalReport& e = run.eval;
  const RoutingStats m = e.mean_routing();
  // Router time is a per-rank mean; each rank routed tokens / world of the tokens.
  const double per_token = e.tokens ? e.router_s() * e.world_size / double(e.tokens) * 1e6 : 0.0;
  std::vector<std::string> row = {run.name,
                                  e.router,
                                  std::to_string(e.expert_parallel),
                                  std::to_string(e.parameters.total),
                                  std::to_string(e.parameters.router),
                                  std::to_string(e.parameters.active),
                                  fmt(per_token, "%.2f"),
                                  fmt(100 * e.router_share(), "%.1f%%"),
                                  fmt(m.token_entropy, "%.4f"),
                                  fmt(m.utilisation, "%.3f"),
                                  fmt(m.max_over_mean, "%.3f"),
                                  fmt(m.cv, "%.3f"),
                                  fmt(m.drop_rate, "%.4f"),
                                  fmt(e.mean_rank_max_over_mean(), "%.3f")};
  if (e.classification())
    row.insert(row.end(), {fmt(e.accuracy, "%.4f"), fmt(e.macro_f1, "%.4f")});
  else
    row.push_back(fmt(e.perplexity, "%.4f"));
  return row;
}

// ---- HTML ---------------------------------------------------------------------------------------

const char* kCss = R"(body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,td:nth-child(2),th:first-child{text-align:left}
.figures{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.meta{color:#666;font-size:12px}figure{margin:0}figcaption{font-size:12px;color:#555})";

std::string html_table(const std::vector<std::string>& columns,
                       const std::vector<std::vector<std::string>>& rows,
                       const std::string& attrs) {
  std::ostringstream os;
  os << "<table " << attrs << "><thead><tr>";
  for (const auto& c : columns) os << "<th>" << xml_escape(c) << "</th>";
  os << "</tr></thead><tbody>\n";
  for (const auto& r : rows) {
    os << "<tr>";
    for (const auto& cell : r) os << "<td>" << xml_escape(cell) << "</td>";
    os << "</tr>\n";
  }
  os << "</tbody></table>\n";
  return os.str();
}

// The expert bias's spread (max - min; router.expert_bias), or a dash for a router without one.
std::string bias_range(const LayerReport& l) {
  if (l.expert_bias.empty()) return "—";
  const auto [lo, hi] = std::minmax_element(l.expert_bias.begin(), l.expert_bias.end());
  return fmt(*hi - *lo, "%.4f");
}

std::vector<std::vector<std::string>> layer_rows(const EvalReport& e) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : e.layers)
    rows.push_back({std::to_string(l.layer), std::to_string(l.routing.num_tokens),
                    fmt(l.routing.utilisation, "%.3f"), fmt(l.routing.max_over_mean, "%.3f"),
                    fmt(l.routing.cv, "%.3f"), fmt(l.routing.token_entropy, "%.4f"),
                    fmt(l.routing.drop_rate, "%.4f"), fmt(l.router_s * 1e3, "%.2f"),
                    fmt(l.moe_s * 1e3, "%.2f"), bias_range(l),
                    fmt(l.rank_max_over_mean(), "%.3f")});
  return rows;
}
const std::vector<std::string> kLayerColumns = {"layer",  "tokens",     "utilisation",  "max/mean",
                                                "CV",     "entropy",    "drop rate",    "router ms",
                                                "MoE ms", "bias range", "rank max/mean"};

std::vector<std::vector<std::string>> rank_rows(const EvalReport& e) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : e.ranks)
    rows.push_back({std::to_string(r.rank), e.rank_experts_text(r.ep_rank),
                    std::to_string(r.tokens_received), fmt(r.forward_s, "%.3f"),
                    fmt(r.moe_s, "%.3f"), fmt(r.experts_s, "%.3f")});
  return rows;
}
const std::vector<std::string> kRankColumns = {"rank",      "experts", "tokens received",
                                               "forward s", "MoE s",   "experts s"};

// The caption is the chart's own title, drawn inside the SVG.
std::string figure_html(const Figure& f) {
  return "<figure>" + f.svg + "</figure>\n";
}

}  // namespace

LossCurve read_loss_curve(const std::string& run_dir_or_file) {
  const std::string path = fs::is_directory(run_dir_or_file)
                               ? (fs::path(run_dir_or_file) / "metrics.jsonl").string()
                               : run_dir_or_file;
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open training metrics");
  std::map<int64_t, std::pair<double, int>> by_step;  // step -> (loss sum, ranks)
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw ConfigError(detail::concat(path, ":", n, ": not a JSON line"));
    }
    if (j.value("kind", "") != "loss") continue;
    if (!j.contains("step") || !j.contains("loss") || !j["loss"].is_number())
      throw ConfigError(detail::concat(path, ":", n, ": loss record without step or loss"));
    auto& acc = by_step[j["step"].get<int64_t>()];
    acc.first += j["loss"].get<double>();
    acc.second += 1;
  }
  if (by_step.empty()) throw ConfigError(path + ": no loss records");
  LossCurve c;
  fs::path p = fs::path(path).parent_path();
  c.name = p.filename().empty() ? path : p.filename().string();
  for (const auto& [step, acc] : by_step) {
    c.steps.push_back(double(step));
    c.loss.push_back(acc.first / acc.second);
  }
  return c;
}

std::string render_html(const ComparisonReport& report) {
  const Figures f = build_figures(report);
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
     << xml_escape(report.title) << "</title><style>" << kCss << "</style></head><body>\n<h1>"
     << xml_escape(report.title) << "</h1>\n";
  if (!report.runs.empty()) {
    const auto& e = report.runs.front().eval;
    os << "<p class=\"meta\">evaluation set " << xml_escape(e.data) << " (" << e.tokens
       << " tokens, " << e.predicted << " predicted), " << e.num_experts << " experts, top-"
       << e.top_k << ". Written by <code>switchyard report</code>.</p>\n";
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& run : report.runs) rows.push_back(comparison_row(run));
  os << "<h2>Comparison</h2>\n"
     << html_table(comparison_columns(report), rows, "id=\"comparison\" class=\"comparison\"")
     << "<p class=\"meta\">Entropy, utilisation, max/mean and CV are means over MoE layers; router "
        "share is the router's part of the MoE blocks' time.</p>\n";
  os << "<h2>Per layer</h2>\n<div class=\"figures\">" << figure_html(f.entropy)
     << figure_html(f.imbalance) << "</div>\n";
  os << "<h2>Training loss</h2>\n";
  if (f.loss)
    os << "<div class=\"figures\">" << figure_html(*f.loss) << "</div>\n";
  else
    os << "<p class=\"meta\">No training logs given (<code>--train-log RUN_DIR</code>).</p>\n";
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const auto& run = report.runs[i];
    os << "<section class=\"run\" id=\"run-" << i << "\">\n<h2>" << xml_escape(run.name)
       << "</h2>\n<p class=\"meta\">model " << xml_escape(run.eval.model) << ", router "
       << xml_escape(run.eval.router) << " <code>" << xml_escape(run.eval.router_config)
       << "</code>, world " << run.eval.world_size << ", EP " << run.eval.expert_parallel << ", "
       << xml_escape(run.eval.dtype) << " on " << xml_escape(run.eval.device)
       << "</p>\n<div class=\"figures\">" << figure_html(f.runs[i].heatmap)
       << figure_html(f.runs[i].rank_load) << "</div>\n"
       << html_table(kLayerColumns, layer_rows(run.eval), "class=\"layers\"")
       << html_table(kRankColumns, rank_rows(run.eval), "class=\"ranks\"") << "</section>\n";
  }
  os << "</body></html>\n";
  return os.str();
}

std::string render_markdown(const ComparisonReport& report) {
  const Figures f = build_figures(report);
  auto md_table = [](const std::vector<std::string>& columns,
                     const std::vector<std::vector<std::string>>& rows) {
    std::ostringstream os;
    os << "|";
    for (const auto& c : columns) os << " " << c << " |";
    os << "\n|";
    for (size_t i = 0; i < columns.size(); ++i) os << (i < 2 ? " --- |" : " ---: |");
    os << "\n";
    for (const auto& r : rows) {
      os << "|";
      for (const auto& cell : r) os << " " << cell << " |";
      os << "\n";
    }
    return os.str();
  };
  std::ostringstream os;
  os << "# " << report.title << "\n\n";
  if (!report.runs.empty()) {
    const auto& e = report.runs.front().eval;
    os << "Evaluation set `" << e.data << "` (" << e.tokens << " tokens), " << e.num_experts
       << " experts, top-" << e.top_k << ".\n\n";
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& run : report.runs) rows.push_back(comparison_row(run));
  os << "## Comparison\n\n" << md_table(comparison_columns(report), rows) << "\n";
  os << "## Per layer\n\n![" << f.entropy.caption << "](" << f.entropy.file << ")\n!["
     << f.imbalance.caption << "](" << f.imbalance.file << ")\n\n";
  if (f.loss) os << "## Training loss\n\n![" << f.loss->caption << "](" << f.loss->file << ")\n\n";
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const auto& run = report.runs[i];
    os << "## " << run.name << "\n\nRouter " << run.eval.router << " `" << run.eval.router_config
       << "`, world " << run.eval.world_size << ", EP " << run.eval.expert_parallel << ".\n\n"
       << "![" << f.runs[i].heatmap.caption << "](" << f.runs[i].heatmap.file << ")\n!["
       << f.runs[i].rank_load.caption << "](" << f.runs[i].rank_load.file << ")\n\n"
       << md_table(kLayerColumns, layer_rows(run.eval)) << "\n"
       << md_table(kRankColumns, rank_rows(run.eval)) << "\n";
  }
  return os.str();
}

std::vector<std::string> write_report(const ComparisonReport& report, const std::string& out_dir) {
  if (report.runs.empty()) throw ConfigError("report: no eval results given");
  for (const auto& run : report.runs)
    if (run.eval.task != report.runs.front().eval.task)
      throw ConfigError("report: " + run.name + " is a " + run.eval.task + " result and " +
                        report.runs.front().name + " a " + report.runs.front().eval.task +
                        " one; compare runs of one task");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw ConfigError(out_dir + ": cannot create report folder (" + ec.message() + ")");
  std::vector<std::pair<std::string, std::string>> files;
  const Figures f = build_figures(report);
  for (const auto& r : f.runs) {
    files.push_back({r.heatmap.file, r.heatmap.svg});
    files.push_back({r.rank_load.file, r.rank_load.svg});
  }
  files.push_back({f.entropy.file, f.entropy.svg});
  files.push_back({f.imbalance.file, f.imbalance.svg});
  if (f.loss) files.push_back({f.loss->file, f.loss->svg});
  files.push_back({"report.md", render_markdown(report)});
  files.push_back({"report.html", render_html(report)});  // last: its presence means complete
  std::vector<std::string> written;
  for (const auto& [name, text] : files) {
    const fs::path path = fs::path(out_dir) / name;
    const fs::path partial = path.string() + ".partial";
    {
      std::ofstream out(partial, std::ios::binary);
      out << text;
      if (!out.flush()) throw Error(partial.string() + ": write failed");
    }
    fs::rename(partial, path);
    written.push_back(path.string());
  }
  return written;
}

}  // namespace switchyard
