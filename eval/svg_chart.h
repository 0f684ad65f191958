// Small SVG charts drawn by the project itself for the comparison report: a heatmap with a colour
// legend, bar charts and line charts. Output is an inline <svg> element (no scripts, no fonts).
#pragma once

#include <string>
#include <vector>

namespace switchyard {

/// rows x cols values coloured on one scale (viridis, low = dark purple, high = yellow).
struct Heatmap {
  std::string title;
  std::string css_class = "heatmap";
  std::string row_label, col_label;            ///< axis names ("layer", "expert")
  std::vector<std::string> rows, cols;         ///< tick labels
  std::vector<std::vector<double>> values;     ///< [rows][cols]
  std::vector<std::vector<std::string>> tips;  ///< hover text per cell; may be empty
  double min = 0, max = 1;                     ///< colour scale range (legend ends)
  std::string legend_label;                    ///< what the colour means
  bool show_values = false;                    ///< print each value inside its cell
};

/// One bar per label.
struct BarChart {
  std::string title;
  std::string css_class = "bars";
  std::string x_label, y_label;
  std::vector<std::string> labels;
  std::vector<double> values;
};

/// Polylines sharing axes, one colour per series, with a legend.
struct LineChart {
  struct Series {
    std::string name;
    std::vector<double> x, y;
  };
  std::string title;
  std::string css_class = "lines";
  std::string x_label, y_label;
  std::vector<Series> series;
  bool integer_x = false;  ///< x ticks at whole numbers (layers, steps)
};

///   usage: html += svg_heatmap(h);  // <svg class="heatmap" ...> with rows·cols <rect
///   class="cell">
std::string svg_heatmap(const Heatmap& h);
std::string svg_bar_chart(const BarChart& b);
std::string svg_line_chart(const LineChart& c);

/// "#rrggbb" of the viridis colour map at t in [0, 1] (clamped).
std::string viridis(double t);
/// The i-th colour of a qualitative palette for series.
std::string series_colour(size_t i);
/// Text with &, <, >, " escaped for XML/HTML.
std::string xml_escape(const std::string& s);

}  // namespace switchyard
