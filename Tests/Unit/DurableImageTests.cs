using OrleansStorage.Files;
using Xunit;

namespace OrleansStorage.Tests.Unit;

/// <summary>
/// The power-cut model that PowerLossSimulator and infra/chaos share: after a restore, the tree
/// holds exactly what its fsyncs made durable, file contents and directory entries apart.
/// </summary>
public sealed class DurableImageTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "ostor-image-test-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _tree;
    private readonly DurableImage _image;

    public DurableImageTests()
    {
        _tree = Path.Combine(_root, "volumes");
        Directory.CreateDirectory(Path.Combine(_tree, "v1"));
        File.WriteAllText(Path.Combine(_tree, "v1", "old"), "baseline");
        _image = new DurableImage(Path.Combine(_root, "image"));
        _image.Baseline(_tree);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string PathOf(string name) => Path.Combine(_tree, "v1", name);

    [Fact]
    public void A_file_holds_what_it_held_at_its_last_fsync()
    {
        File.WriteAllText(PathOf("old"), "synced");
        _image.Synced(PathOf("old"));
        File.WriteAllText(PathOf("old"), "never synced");

        Assert.Equal(1, _image.Restore(_tree));
        Assert.Equal("synced", File.ReadAllText(PathOf("old")));
    }

    [Fact]
    public void A_new_file_whose_directory_was_never_fsynced_is_gone_even_if_its_content_was()
    {
        File.WriteAllText(PathOf("new"), "content");
        _image.Synced(PathOf("new"));

        _image.Restore(_tree);
        Assert.False(File.Exists(PathOf("new")), "a file whose directory entry never reached the disk survived the power cut");
    }

    [Fact]
    public void A_new_file_with_a_durable_entry_but_no_fsync_of_its_own_is_empty()
    {
        File.WriteAllText(PathOf("new"), "content");
        _image.Synced(Path.Combine(_tree, "v1"));

        _image.Restore(_tree);
        Assert.Equal("", File.ReadAllText(PathOf("new")));
    }

    [Fact]
    public void A_file_renamed_into_place_is_durable_under_its_name_only_once_its_directory_is_fsynced()
    {
        File.WriteAllText(PathOf("old.tmp"), "published");
        _image.Synced(PathOf("old.tmp"));
        File.Move(PathOf("old.tmp"), PathOf("old"), overwrite: true);

        _image.Restore(_tree);
        Assert.Equal("baseline", File.ReadAllText(PathOf("old")));
        Assert.False(File.Exists(PathOf("old.tmp")), "the temporary name came back though the directory's durable entries never held it");

        File.WriteAllText(PathOf("old.tmp"), "published");
        _image.Synced(PathOf("old.tmp"));
        File.Move(PathOf("old.tmp"), PathOf("old"), overwrite: true);
        _image.Synced(Path.Combine(_tree, "v1"));

        _image.Restore(_tree);
        Assert.Equal("published", File.ReadAllText(PathOf("old")));
    }

    [Fact]
    public void A_removal_never_made_durable_is_undone_and_one_made_durable_is_not()
    {
        File.Delete(PathOf("old"));
        _image.Restore(_tree);
        Assert.Equal("baseline", File.ReadAllText(PathOf("old")));

        File.Delete(PathOf("old"));
        _image.Synced(Path.Combine(_tree, "v1"));
        _image.Restore(_tree);
        Assert.False(File.Exists(PathOf("old")));
    }

    [Fact]
    public void A_directory_created_without_an_fsync_of_its_parent_is_gone()
    {
        Directory.CreateDirectory(Path.Combine(_tree, "v2"));
        File.WriteAllText(Path.Combine(_tree, "v2", "seg"), "data");
        _image.Synced(Path.Combine(_tree, "v2"));
        _image.Synced(Path.Combine(_tree, "v2", "seg"));

        _image.Restore(_tree);
        Assert.False(Directory.Exists(Path.Combine(_tree, "v2")));
    }

    [Fact]
    public void A_new_file_that_took_a_deleted_files_inode_number_is_a_new_file()
    {
        // ext4 hands a freed inode number to the next file made in the same directory: make that
        // happen if it will, and in any case the new file, whose entry is durable but whose data
        // never was, must come back empty, not with the deleted file's bytes.
        var oldInode = InodeOf(PathOf("old"));
        File.Delete(PathOf("old"));
        File.WriteAllText(PathOf("new"), "never synced");
        for (var tries = 0; tries < 20 && InodeOf(PathOf("new")) != oldInode; tries++)
        {
            File.Delete(PathOf("new"));
            File.WriteAllText(PathOf("new"), "never synced");
        }
        _image.Synced(Path.Combine(_tree, "v1"));

        _image.Restore(_tree);
        Assert.Equal("", File.ReadAllText(PathOf("new")));
        Assert.False(File.Exists(PathOf("old")), "the removal was made durable with the directory");
    }

    [Fact]
    public void A_file_fsynced_in_one_directory_and_moved_into_another_keeps_its_content_there()
    {
        Directory.CreateDirectory(Path.Combine(_tree, "v2"));
        _image.Synced(_tree);
        File.WriteAllText(PathOf("copy"), "fsynced here");
        _image.Synced(PathOf("copy"));
        File.Move(PathOf("copy"), Path.Combine(_tree, "v2", "copy"));
        _image.Synced(Path.Combine(_tree, "v2"));

        _image.Restore(_tree);
        Assert.Equal("fsynced here", File.ReadAllText(Path.Combine(_tree, "v2", "copy")));
    }

    [Fact]
    public void A_directory_made_again_at_the_same_path_starts_empty()
    {
        Directory.Delete(Path.Combine(_tree, "v1"), recursive: true);
        _image.Synced(_tree);
        Directory.CreateDirectory(Path.Combine(_tree, "v1"));
        File.WriteAllText(PathOf("seg"), "new");
        _image.Synced(_tree); // the new v1 is durable, none of its entries are

        _image.Restore(_tree);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_tree, "v1")));
    }

    [Fact]
    public void A_baseline_is_kept_until_the_next_one()
    {
        Assert.True(_image.HasBaseline);
        Assert.True(new DurableImage(Path.Combine(_root, "image")).HasBaseline);
        Assert.False(new DurableImage(Path.Combine(_root, "other-image")).HasBaseline);
    }

    private static string InodeOf(string path) => DurableFiles.Identity(path).Split('-')[0];

    [Fact]
    public void Another_process_restores_from_the_image_files_alone()
    {
        File.WriteAllText(PathOf("old"), "synced");
        _image.Synced(PathOf("old"));
        File.WriteAllText(PathOf("old"), "in the page cache of a killed process");

        var elsewhere = new DurableImage(Path.Combine(_root, "image"));
        elsewhere.Restore(_tree);
        Assert.Equal("synced", File.ReadAllText(PathOf("old")));
    }

    [Fact]
    public void After_power_off_fsyncs_count_for_nothing()
    {
        _image.PowerOff();
        File.WriteAllText(PathOf("old"), "after the cut");
        _image.Synced(PathOf("old"));

        _image.Restore(_tree);
        Assert.Equal("baseline", File.ReadAllText(PathOf("old")));
    }

    [Fact]
    public void Fsyncs_fail_while_the_fail_file_is_in_the_image_directory()
    {
        Assert.False(_image.FailsFsync);
        File.WriteAllText(Path.Combine(_root, "image", DurableImage.FailFsyncFileName), "");
        Assert.True(_image.FailsFsync);
    }
}
