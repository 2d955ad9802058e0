-- if_built.lua — a part of a chapter that shows only when the build made a file:
--
--   :::: {.if-built file="book/figures/camvid_panels.png"}
--   ![caption](book/figures/camvid_panels.png)
--
--   ::: otherwise
--   What the reader sees when the file was not made (and how to make it).
--   :::
--   ::::
--
-- file is a path as the Markdown names it, looked up in the build root
-- (CRBOOK_BUILDROOT, the meson build directory). When it exists the Div's content
-- stays, less its `otherwise` Divs; when it does not, only their content stays. It
-- serves figures drawn from data the repository may not hold (chapter 8's panels are
-- CamVid's frames): the build makes them when told where the data is.
local crbook = dofile(pandoc.path.join({ pandoc.path.directory(PANDOC_SCRIPT_FILE), 'crbook.lua' }))

local buildroot = os.getenv('CRBOOK_BUILDROOT')

function Div(el)
  if not el.classes:includes('if-built') then return nil end
  local file = el.attributes.file
  local what = 'if-built file="' .. tostring(file) .. '"'
  if not file or file == '' then crbook.fail(what, 'an {.if-built} Div needs file="..."') end
  local found = buildroot and crbook.exists(crbook.join(buildroot, file))
  local keep, otherwise = {}, {}
  for _, b in ipairs(el.content) do
    if b.t == 'Div' and b.classes:includes('otherwise') then
      for _, c in ipairs(b.content) do otherwise[#otherwise + 1] = c end
    else
      keep[#keep + 1] = b
    end
  end
  if #otherwise == 0 then crbook.fail(what, 'an {.if-built} Div needs an inner ::: otherwise Div') end
  return found and keep or otherwise
end
