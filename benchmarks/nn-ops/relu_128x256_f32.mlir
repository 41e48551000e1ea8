// description: relu(X) = max(X, 0) on 128x256 f32 as linalg.generic
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @relu(%X: tensor<128x256xf32>) -> tensor<128x256xf32> {
  %init = tensor.empty() : tensor<128x256xf32>
  %R = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%X : tensor<128x256xf32>) outs(%init : tensor<128x256xf32>) {
  ^bb0(%x: f32, %o: f32):
    %zero = arith.constant 0.0 : f32
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<128x256xf32>
  return %R : tensor<128x256xf32>
}
