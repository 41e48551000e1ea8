#map = affine_map<(d0) -> (d0)>
func.func @f(%a: tensor<4xf32>, %t: tensor<4xf32>) -> tensor<4xf32> {
  %c = arith.constant 1.0 : f32
  %f = linalg.fill <{}> ins(%c : f32) outs(%t : tensor<4xf32>) -> tensor<4xf32>
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} <{}>
      ins(%a : tensor<4xf32>) outs(%f : tensor<4xf32>) {
  ^bb0(%x: f32, %y: f32):
    linalg.yield %x : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
}
