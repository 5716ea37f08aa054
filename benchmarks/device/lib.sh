# Sourced by the device scripts of this folder (run from the repository root on the device machine):
# the carried packages (.device/setup.sh), $R for the results, and the steps they share.
. .device/setup.sh
R=$OUT/r
TG=faceweave/models/tflite_graph.py

# use KERNELS: the default depthwise kernels of the tree (aten, faceweave or cudnn), for the processes started after
use() { sed -i "s/self.depthwise_kernels: DepthwiseChoice = \"[a-z]*\"/self.depthwise_kernels: DepthwiseChoice = \"$1\"/" $TG; }

# stream NAME ARGS...: a 20 s 1080p stream job (stream_profile.py ARGS), its fps and stream timing
stream() {
  local name=$1; shift
  timeout 70 python3 benchmarks/stream_profile.py --seconds 20 --no-cprofile --device cuda "$@" > $R/stream_$name.txt 2>&1
  echo "$name: $(grep -h 'whole stream\|stream timing' $R/stream_$name.txt | cut -c1-330 | tr '\n' ' ')"
}

# cold_starts NAME KERNELS...: one fresh `faceweave swap`-like process per kernel choice, in the order given
cold_starts() {
  local name=$1; shift
  for v in "$@"; do use $v
    timeout 40 python3 benchmarks/cold_start.py --device cuda --size 1920x1080 --seconds 1 --repeats 1 --modes auto \
      > $R/${name}_$v.txt 2>&1; echo "cold $v: $(grep -m1 'auto (median)' $R/${name}_$v.txt | cut -c1-200)"
  done
}
