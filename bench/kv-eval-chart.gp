# kv-eval-chart.gp -- the chart of `rotkv kv-eval --chart FILE`: MSE per
# coordinate on N(0,1) vectors of 128 values against bits per value, one
# labelled point per KV cache type, with the Shannon bound D(R) = 4^-R of
# i.i.d. unit Gaussian coordinates; left all types, right the 2-6 bit region.
# rotkv feeds this same script to gnuplot (`rotkv kv-eval --chart-script`
# prints it). To redraw from saved CSV output:
#   ./build/rotkv kv-eval -o csv > kv.csv
#   gnuplot -e "data='kv.csv'; out='kv.svg'" bench/kv-eval-chart.gp
# Variables: data (a CSV written by rotkv kv-eval -o csv), out (the image),
# term ('svg', the default, or 'pngcairo').
if (!exists("term")) term = 'svg'
if (term eq 'pngcairo') {
    set terminal pngcairo size 1400,680 enhanced font 'sans,10'
} else {
    set terminal svg size 1400,680 enhanced font 'sans,12' background rgb 'white'
}
set output out
set datafile separator comma
set datafile columnheaders
# family of a type name: 1 f32/f16/bf16, 2 llama.cpp block types, 3 tq*, 4 kt*
fam(s) = s[1:2] eq 'kt' ? 4 : s[1:2] eq 'tq' ? 3 : (s[1:1] eq 'q' || s[1:2] eq 'iq') ? 2 : 1
array family[4] = ['f32, f16, bf16', 'llama.cpp block types', 'tq* (Lloyd-Max codebook)', 'kt* (fitted transform)']
sel(f, v) = (fam(stringcolumn('type')) == f && v > 0) ? v : NaN
shannon(b) = 4**(-b)
set multiplot layout 1,2 title 'KV cache types on N(0,1) vectors of n = 128 values: distortion vs rate'
set xlabel 'bits per value (scales and norms included)'
set ylabel 'MSE per coordinate'
set logscale y
set format y '10^{%L}'
set grid xtics ytics lc rgb '#dddddd'
set key bottom left box opaque
set title 'all types (dotted box: the zoom on the right)'
set xrange [1.5:17]
set yrange [1e-10:1]
set xtics 2
set object 1 rect from 1.8,5e-4 to 6.3,0.3 fs empty border lc rgb '#999999' dt 3
plot shannon(x) with lines lw 2 dt 2 lc rgb '#555555' title 'Shannon bound 4^{-b}', \
     for [f=1:4] data using 'bits128':(sel(f, column('mse128'))) with points pt 7 ps 0.9 lc f \
          title family[f], \
     data using 'bits128':(column('bits128') > 6.5 ? sel(fam(stringcolumn('type')), column('mse128')) : NaN):'type' \
          with labels left offset char 0.7,0.4 font ',9' noenhanced notitle
unset object 1
set title 'zoom: 1.8 to 6.3 bits per value'
set xrange [1.8:6.3]
set yrange [5e-4:0.3]
set xtics 0.5
set key top right box opaque
plot shannon(x) with lines lw 2 dt 2 lc rgb '#555555' title 'Shannon bound 4^{-b}', \
     for [f=2:4] data using 'bits128':(sel(f, column('mse128'))) with points pt 7 ps 0.9 lc f notitle, \
     data using 'bits128':(sel(2, column('mse128'))):'type' with labels left offset char 0.7,0 \
          font ',9' noenhanced notitle, \
     data using 'bits128':(sel(3, column('mse128'))):'type' with labels left offset char 0.6,-0.6 \
          font ',9' noenhanced notitle, \
     data using 'bits128':(sel(4, column('mse128'))):'type' with labels right offset char -0.6,0.5 \
          font ',9' noenhanced notitle
unset multiplot
