-- plot.lua — replaces
--
--   ```{.plot src="lab:lab02-im2col" script="book/plots/lab02_stack.gp" caption="..."}
--   ```
--
-- by a figure: the CSV (optionally filtered by where="col=value,...") is written to
-- CRBOOK_FIGDIR/NAME.csv — provenance lines kept as "#" comments, then the header
-- row, then the rows — and the filter runs
--
--   gnuplot -c SCRIPT NAME.csv NAME.svg
--
-- (ARG1 the data, ARG2 the SVG to write). The script sets `set datafile separator
-- comma` and reads columns by number or by name (column("ms") with
-- `set datafile columnheaders`). The caption gets the CSV's provenance line.
-- Optional: width="80%" (the image's width on the page); group="col" (one data
-- file per value of col, for one line per value: ARG3 lists the values, ARG4 is
-- the per-value file name with %s where the value goes).
local crbook = dofile(pandoc.path.join({ pandoc.path.directory(PANDOC_SCRIPT_FILE), 'crbook.lua' }))

local function csv_field(s)
  if s:find('[,"\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function CodeBlock(el)
  if not el.classes:includes('plot') then return nil end
  local src, script = el.attributes.src, el.attributes.script
  local what = 'plot script="' .. tostring(script) .. '" src="' .. tostring(src) .. '"'
  if not src or src == '' then crbook.fail(what, 'a {.plot} block needs src="..."') end
  if not script or script == '' then crbook.fail(what, 'a {.plot} block needs script="..."') end
  if not crbook.figdir or crbook.figdir == '' then
    crbook.fail(what, 'CRBOOK_FIGDIR is not set (where plots go)')
  end
  local script_path = crbook.join(crbook.root, script)
  local script_text = crbook.read(script_path)
  if not script_text then crbook.fail(what, 'gnuplot script ' .. script_path .. ' not found') end

  local t = crbook.load_csv(src, what)
  local rows = crbook.filter_rows(t, el.attributes.where, what)
  if #rows == 0 then
    crbook.fail(what, 'no data: no row of ' .. t.path .. ' matches where="' ..
                tostring(el.attributes.where or '') .. '"')
  end

  local out = {}
  for _, l in ipairs(t.prov_lines) do out[#out + 1] = l end
  local function row_text(r)
    local f = {}
    for i, v in ipairs(r) do f[i] = csv_field(v) end
    return table.concat(f, ',')
  end
  out[#out + 1] = row_text(t.header)
  for _, r in ipairs(rows) do out[#out + 1] = row_text(r) end
  local data = table.concat(out, '\n') .. '\n'

  local stem = (script:match('([^/]+)$') or 'plot'):gsub('%.[^.]*$', '')
  local key = pandoc.utils.sha1(script_text .. '\0' .. data):sub(1, 10)
  local base = crbook.join(crbook.figdir, 'plot-' .. stem .. '-' .. key)
  local csv_path, svg_path = base .. '.csv', base .. '.svg'
  crbook.write(csv_path, data)
  -- gnuplot writes SVG.tmp; it is renamed to SVG once complete (never a half plot).
  local svg_tmp = svg_path .. '.tmp'
  os.remove(svg_path)
  os.remove(svg_tmp)
  local args = { '-c', script_path, csv_path, svg_tmp }

  -- group="col": one more data file per distinct value of col (rows in CSV order),
  -- ARG3 = the values separated by spaces, ARG4 = the file-name pattern with %s for
  -- the value: `plot for [g in ARG3] sprintf(ARG4, g) using "batch":"ms" title g`.
  local group = el.attributes.group
  if group and group ~= '' then
    local gi = crbook.column(t, group, what)
    local values, per = {}, {}
    for _, r in ipairs(rows) do
      local v = crbook.trim(r[gi] or '')
      if not v:match('^[%w%.%+%-_]+$') then
        crbook.fail(what, 'group column "' .. group .. '" has value "' .. v ..
                    '": only letters, digits and . + - _ can name a series')
      end
      if not per[v] then
        per[v] = {}
        values[#values + 1] = v
      end
      per[v][#per[v] + 1] = r
    end
    for _, v in ipairs(values) do
      local lines = {}
      for _, l in ipairs(t.prov_lines) do lines[#lines + 1] = l end
      lines[#lines + 1] = row_text(t.header)
      for _, r in ipairs(per[v]) do lines[#lines + 1] = row_text(r) end
      crbook.write(base .. '-' .. v .. '.csv', table.concat(lines, '\n') .. '\n')
    end
    args[#args + 1] = table.concat(values, ' ')
    args[#args + 1] = base .. '-%s.csv'
  end

  local ok, err = pcall(pandoc.pipe, 'gnuplot', args, '')
  if not ok then
    os.remove(svg_tmp)
    crbook.fail(what, 'gnuplot failed: ' .. tostring(err and (err.output or err) or ''))
  end
  local f = io.open(svg_tmp, 'rb')
  local size = f and f:seek('end') or 0
  if f then f:close() end
  if size == 0 then
    os.remove(svg_tmp)
    crbook.fail(what, 'gnuplot wrote no SVG at ' .. svg_tmp)
  end
  local renamed, rerr = os.rename(svg_tmp, svg_path)
  if not renamed then crbook.fail(what, 'cannot rename ' .. svg_tmp .. ': ' .. tostring(rerr)) end

  local caption = crbook.caption(el.attributes.caption, t)
  local img_attrs = { ['data-csv'] = src }
  if el.attributes.width then img_attrs.width = el.attributes.width end
  local img = pandoc.Image(caption, svg_path, 'fig:', pandoc.Attr('', { 'plot' }, img_attrs))
  return pandoc.Div({ pandoc.Para({ img }) }, pandoc.Attr(el.identifier or '', { 'plot' }))
end
