// Layout is fixed-size and computed here (margins, ticks, label positions), so a chart looks the
// same in every browser and in a Markdown viewer that shows .svg files.
#include "eval/svg_chart.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>

namespace switchyard {
namespace {

std::string num(double v, const char* fmt = "%.4g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string px(double v) {
  return num(v, "%.1f");
}

// "Nice" tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> ticks(double lo, double hi, int target = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

std::string svg_open(const std::string& css_class, double w, double h, const std::string& title,
                     const std::string& extra = "") {
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"" << css_class << "\" width=\"" << px(w)
     << "\" height=\"" << px(h) << "\" viewBox=\"0 0 " << px(w) << " " << px(h)
     << "\" font-family=\"sans-serif\" font-size=\"11\"" << extra << ">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  if (!title.empty())
    os << "<text class=\"chart-title\" x=\"" << px(w / 2) << "\" y=\"16\" text-anchor=\"middle\" "
       << "font-size=\"13\" font-weight=\"bold\">" << xml_escape(title) << "</text>\n";
  return os.str();
}

// Axes with ticks for a plot area [x0, x1] x [y0, y1] (y grows downwards on screen).
struct Axes {
  double x0, x1, y0, y1;          // pixels
  double xmin, xmax, ymin, ymax;  // data
  double sx(double x) const { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); }
  double sy(double y) const { return y1 - (y - ymin) / (ymax - ymin) * (y1 - y0); }
};

std::string draw_axes(const Axes& a, const std::string& x_label, const std::string& y_label,
                      bool integer_x, bool x_ticks = true) {
  std::ostringstream os;
  os << "<g class=\"axes\" stroke=\"#444\" fill=\"none\"><line x1=\"" << px(a.x0) << "\" y1=\""
     << px(a.y1) << "\" x2=\"" << px(a.x1) << "\" y2=\"" << px(a.y1) << "\"/><line x1=\""
     << px(a.x0) << "\" y1=\"" << px(a.y0) << "\" x2=\"" << px(a.x0) << "\" y2=\"" << px(a.y1)
     << "\"/></g>\n";
  for (double t : ticks(a.ymin, a.ymax)) {
    os << "<line x1=\"" << px(a.x0) << "\" x2=\"" << px(a.x1) << "\" y1=\"" << px(a.sy(t))
       << "\" y2=\"" << px(a.sy(t)) << "\" stroke=\"#e5e5e5\"/>"
       << "<text x=\"" << px(a.x0 - 4) << "\" y=\"" << px(a.sy(t) + 4) << "\" text-anchor=\"end\">"
       << num(t) << "</text>\n";
  }
  if (x_ticks) {
    std::vector<double> xs = ticks(a.xmin, a.xmax);
    if (integer_x) {
      std::vector<double> whole;
      for (double t : xs)
        if (t == std::floor(t)) whole.push_back(t);
      if (whole.empty()) whole = {a.xmin};
      xs = whole;
    }
    for (double t : xs)
      os << "<text x=\"" << px(a.sx(t)) << "\" y=\"" << px(a.y1 + 14)
         << "\" text-anchor=\"middle\">" << num(t) << "</text>\n";
  }
  os << "<text x=\"" << px((a.x0 + a.x1) / 2) << "\" y=\"" << px(a.y1 + 30)
     << "\" text-anchor=\"middle\">" << xml_escape(x_label) << "</text>\n"
     << "<text transform=\"translate(14 " << px((a.y0 + a.y1) / 2)
     << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(y_label) << "</text>\n";
  return os.str();
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string viridis(double t) {
  // Nine samples of matplotlib's viridis, interpolated linearly.
  static constexpr std::array<std::array<double, 3>, 9> kStops = {{{68, 1, 84},
                                                                   {71, 44, 122},
                                                                   {59, 81, 139},
                                                                   {44, 113, 142},
                                                                   {33, 144, 141},
                                                                   {39, 173, 129},
                                                                   {92, 200, 99},
                                                                   {170, 220, 50},
                                                                   {253, 231, 37}}};
  if (!(t >= 0)) t = 0;  // NaN too
  t = std::min(t, 1.0) * double(kStops.size() - 1);
  const size_t i = std::min(size_t(t), kStops.size() - 2);
  const double f = t - double(i);
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x",
                int(std::lround(kStops[i][0] + f * (kStops[i + 1][0] - kStops[i][0]))),
                int(std::lround(kStops[i][1] + f * (kStops[i + 1][1] - kStops[i][1]))),
                int(std::lround(kStops[i][2] + f * (kStops[i + 1][2] - kStops[i][2]))));
  return buf;
}

std::string series_colour(size_t i) {
  static const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  return kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
}

// ---- heatmap ------------------------------------------------------------------------------------

std::string svg_heatmap(const Heatmap& h) {
  const size_t R = h.rows.size(), C = h.cols.size();
  // Cells shrink for wide grids (60 experts) but stay readable for small ones.
  const double cell_w = std::clamp(560.0 / double(std::max<size_t>(C, 1)), 9.0, 40.0);
  const double cell_h = std::clamp(320.0 / double(std::max<size_t>(R, 1)), 9.0, 28.0);
  const double left = 56, top = 28, grid_w = cell_w * double(C), grid_h = cell_h * double(R);
  const double legend_x = left + grid_w + 24, width = legend_x + 90, height = top + grid_h + 44;
  const double span = h.max > h.min ? h.max - h.min : 1.0;
  std::ostringstream os;
  os << svg_open(
      h.css_class, width, std::max(height, top + 170.0), h.title,
      " data-rows=\"" + std::to_string(R) + "\" data-cols=\"" + std::to_string(C) + "\"");
  os << "<g class=\"cells\">\n";
  for (size_t r = 0; r < R; ++r)
    for (size_t c = 0; c < C; ++c) {
      const double v = h.values[r][c];
      const double x = left + cell_w * double(c), y = top + cell_h * double(r);
      os << "<rect class=\"cell\" data-row=\"" << r << "\" data-col=\"" << c << "\" data-value=\""
         << num(v) << "\" x=\"" << px(x) << "\" y=\"" << px(y) << "\" width=\"" << px(cell_w)
         << "\" height=\"" << px(cell_h) << "\" fill=\"" << viridis((v - h.min) / span)
         << "\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>"
         << xml_escape(r < h.tips.size() && c < h.tips[r].size()
                           ? h.tips[r][c]
                           : h.rows[r] + ", " + h.cols[c] + ": " + num(v))
         << "</title></rect>\n";
      if (h.show_values)
        os << "<text x=\"" << px(x + cell_w / 2) << "\" y=\"" << px(y + cell_h / 2 + 4)
           << "\" text-anchor=\"middle\" font-size=\"9\" fill=\""
           << ((v - h.min) / span > 0.6 ? "#000" : "#fff") << "\">" << num(v, "%.2g")
           << "</text>\n";
    }
  os << "</g>\n";
  // Tick labels: every row; columns thinned to about 20 labels.
  for (size_t r = 0; r < R; ++r)
    os << "<text x=\"" << px(left - 4) << "\" y=\"" << px(top + cell_h * (double(r) + 0.5) + 4)
       << "\" text-anchor=\"end\">" << xml_escape(h.rows[r]) << "</text>\n";
  const size_t every = std::max<size_t>(1, (C + 19) / 20);
  for (size_t c = 0; c < C; c += every)
    os << "<text x=\"" << px(left + cell_w * (double(c) + 0.5)) << "\" y=\""
       << px(top + grid_h + 13) << "\" text-anchor=\"middle\">" << xml_escape(h.cols[c])
       << "</text>\n";
  os << "<text x=\"" << px(left + grid_w / 2) << "\" y=\"" << px(top + grid_h + 30)
     << "\" text-anchor=\"middle\">" << xml_escape(h.col_label) << "</text>\n"
     << "<text transform=\"translate(12 " << px(top + grid_h / 2)
     << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(h.row_label) << "</text>\n";
  // Legend: a vertical gradient from max (top) to min (bottom) with its end values.
  // Gradient ids must be unique within a page that holds several heatmaps.
  const std::string grad =
      "scale" + std::to_string(std::hash<std::string>{}(h.title + h.legend_label) % 1000000007);
  const double lh = 130;
  os << "<g class=\"legend\"><defs><linearGradient id=\"" << grad
     << "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i <= 8; ++i)
    os << "<stop offset=\"" << num(i / 8.0) << "\" stop-color=\"" << viridis(i / 8.0) << "\"/>";
  os << "</linearGradient></defs><rect x=\"" << px(legend_x) << "\" y=\"" << px(top)
     << "\" width=\"14\" height=\"" << px(lh) << "\" fill=\"url(#" << grad
     << ")\" stroke=\"#444\" stroke-width=\"0.5\"/>"
     << "<text class=\"legend-max\" x=\"" << px(legend_x + 18) << "\" y=\"" << px(top + 9) << "\">"
     << num(h.max) << "</text><text class=\"legend-min\" x=\"" << px(legend_x + 18) << "\" y=\""
     << px(top + lh) << "\">" << num(h.min) << "</text><text x=\"" << px(legend_x) << "\" y=\""
     << px(top + lh + 16) << "\">" << xml_escape(h.legend_label) << "</text></g>\n</svg>\n";
  return os.str();
}

// ---- bars ---------------------------------------------------------------------------------------

std::string svg_bar_chart(const BarChart& b) {
  const size_t n = b.values.size();
  const double bar = std::clamp(480.0 / double(std::max<size_t>(n, 1)), 8.0, 56.0);
  // At least wide enough for the title over a single bar.
  const double left = 64, top = 28, plot_w = std::max(bar * double(n) * 1.25 + 10, 260.0),
               plot_h = 180;
  const double vmax =
      b.values.empty() ? 1.0 : std::max(1e-12, *std::max_element(b.values.begin(), b.values.end()));
  const std::vector<double> t = ticks(0, vmax);
  const double step = t.size() > 1 ? t[1] - t[0] : vmax;
  const double ymax = std::max(t.back(), std::ceil(vmax / step - 1e-9) * step);
  Axes a{left, left + plot_w, top, top + plot_h, 0, 1, 0, ymax};
  std::ostringstream os;
  os << svg_open(b.css_class, left + plot_w + 20, top + plot_h + 40, b.title);
  os << draw_axes(a, b.x_label, b.y_label, false, false);
  for (size_t i = 0; i < n; ++i) {
    const double x = left + 5 + bar * 1.25 * double(i), y = a.sy(b.values[i]);
    os << "<rect class=\"bar\" x=\"" << px(x) << "\" y=\"" << px(y) << "\" width=\"" << px(bar)
       << "\" height=\"" << px(a.y1 - y) << "\" fill=\"" << series_colour(0) << "\"><title>"
       << xml_escape(b.labels[i]) << ": " << num(b.values[i]) << "</title></rect>"
       << "<text x=\"" << px(x + bar / 2) << "\" y=\"" << px(a.y1 + 14)
       << "\" text-anchor=\"middle\">" << xml_escape(b.labels[i]) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

// ---- lines --------------------------------------------------------------------------------------

std::string svg_line_chart(const LineChart& c) {
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : c.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax == xmin) xmin -= 0.5, xmax += 0.5;
  const double pad = ymax > ymin ? (ymax - ymin) * 0.08 : std::max(std::abs(ymax) * 0.05, 0.5);
  ymin -= pad;
  ymax += pad;
  const double left = 64, top = 28, plot_w = 460, plot_h = 200, legend_x = left + plot_w + 16;
  Axes a{left, left + plot_w, top, top + plot_h, xmin, xmax, ymin, ymax};
  std::ostringstream os;
  os << svg_open(c.css_class, legend_x + 150, top + plot_h + 40, c.title);
  os << draw_axes(a, c.x_label, c.y_label, c.integer_x);
  for (size_t k = 0; k < c.series.size(); ++k) {
    const auto& s = c.series[k];
    os << "<g class=\"series\" data-name=\"" << xml_escape(s.name) << "\"><polyline fill=\"none\" "
       << "stroke-width=\"2\" stroke=\"" << series_colour(k) << "\" points=\"";
    for (size_t i = 0; i < s.x.size(); ++i)
      os << (i ? " " : "") << px(a.sx(s.x[i])) << "," << px(a.sy(s.y[i]));
    os << "\"/>";
    if (s.x.size() <= 40)  // markers where the points are few enough to tell apart
      for (size_t i = 0; i < s.x.size(); ++i)
        os << "<circle cx=\"" << px(a.sx(s.x[i])) << "\" cy=\"" << px(a.sy(s.y[i]))
           << "\" r=\"3\" fill=\"" << series_colour(k) << "\"><title>" << xml_escape(s.name) << " ("
           << num(s.x[i]) << ", " << num(s.y[i]) << ")</title></circle>";
    os << "</g>\n<rect x=\"" << px(legend_x) << "\" y=\"" << px(top + 16 * double(k))
       << "\" width=\"12\" height=\"4\" fill=\"" << series_colour(k) << "\"/><text x=\""
       << px(legend_x + 16) << "\" y=\"" << px(top + 16 * double(k) + 6) << "\">"
       << xml_escape(s.name) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace switchyard
